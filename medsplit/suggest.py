"""Suggestions for error messages: the closest valid name to a misspelt one, and short listings."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    opts = [str(o) for o in options]
    w = str(word).lower()
    # exports often decorate names ('crp' -> 'crp_mg_l', 'Age' -> 'age'), which difflib scores low
    near = [o for o in opts if o.lower() == w] or [o for o in opts if len(w) >= 3 and (
        o.lower().startswith(w) or w.startswith(o.lower()))]
    if not near:
        lowered = {o.lower(): o for o in opts}
        near = [lowered[m] for m in difflib.get_close_matches(w, list(lowered), n=1, cutoff=0.6)]
    return f" (did you mean {near[0]!r}?)" if near else ""


def listing(options: Iterable[str], limit: int = 12) -> str:
    opts = sorted(str(o) for o in options)
    more = f", ... ({len(opts) - limit} more)" if len(opts) > limit else ""
    return ", ".join(opts[:limit]) + more
