"""Where the dashboard may read and write: a root from the command line, the runs folder in it; refresh rate."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medsplit.errors import ConfigError

__all__ = ["Places", "places", "confined", "check_run_name", "REFRESH_SECONDS"]

#: how often a live run's pages re-read its run store ($MEDSPLIT_REFRESH overrides; tests use a shorter one)
REFRESH_SECONDS = float(os.environ.get("MEDSPLIT_REFRESH") or 1.0)
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Places:
    """``root``: the only folder the page reads or writes under (loaded and saved YAML, runs); ``runs``: the
    run directories, inside it."""

    root: Path
    runs: Path


def places(argv: Sequence[str] | None = None) -> Places:
    """`--root DIR` and `--runs DIR` (passed by `medsplit dashboard`), else $MEDSPLIT_ROOT and $MEDSPLIT_RUNS.

    The runs folder defaults to ROOT/runs when a root is given, else ./runs; the root defaults to the runs
    folder itself (nothing outside it can be loaded). A runs folder outside the root is refused.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs")
    parser.add_argument("--root")
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    root_text = args.root or os.environ.get("MEDSPLIT_ROOT")
    runs_text = args.runs or os.environ.get("MEDSPLIT_RUNS")
    root = Path(root_text).expanduser().resolve() if root_text else None
    if runs_text:
        runs = Path(runs_text).expanduser()
        runs = (root / runs if root is not None and not runs.is_absolute() else runs).resolve()
    else:
        runs = root / "runs" if root is not None else Path("runs").resolve()
    root = root or runs
    if not runs.is_relative_to(root):
        raise ConfigError(f"the runs folder {runs} is outside the dashboard's root {root}",
                          hint="give a --runs folder inside --root, or a --root that holds it")
    return Places(root, runs)


def confined(root: Path, text: str | os.PathLike, what: str) -> Path:
    """``text`` as a path under ``root`` (a relative one is relative to it); one that leads outside is refused."""
    path = Path(text).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()  # links followed: no way out through one
    if not resolved.is_relative_to(root.resolve()):
        raise ConfigError(f"{what} '{text}' is outside the dashboard's root {root}",
                          hint="give a path inside it; `medsplit dashboard --root DIR` sets the root")
    return resolved


def check_run_name(name: str) -> str:
    """A run's name is one folder under the runs folder: letters, digits, '.', '_' and '-' (no '/' or '..')."""
    if not _RUN_NAME.match(name or "") or ".." in name:
        raise ConfigError(f"run name '{name}' is not one folder name",
                          hint="use letters, digits, '.', '_' and '-' (at most 100), starting with a letter or "
                               "digit; no '/' and no '..'")
    return name
