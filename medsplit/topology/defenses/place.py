"""Putting defenses where they act: a site's input defenses on its cuts, its label defenses on its tails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from ...errors import ConfigError
from ..model import Topology
from .base import CutDefense

__all__ = ["defend", "cut_segments", "tail_segments"]


def cut_segments(topology: Topology, site: str) -> list[str]:
    """The segments of ``site`` whose output goes to another party (what leaves the site)."""
    party = {s.name: s.party for s in topology.segments}
    return [s.name for s in topology.segments if s.party == site and any(
        src == s.name and party[c.name] != site for c in topology.segments for src in c.segment_inputs)]


def tail_segments(topology: Topology, site: str) -> list[str]:
    """The segments of ``site`` that read another party's output and lead to a task whose labels ``site`` owns
    and whose loss is computed at ``site`` (the gradients they send back carry those labels)."""
    segs = {s.name: s for s in topology.segments}
    owned = next((set(p.labels) for p in topology.parties if p.name == site), set())
    heads = {t.head for t in topology.tasks if t.label in owned and segs[t.head].party == site}
    out = []
    for s in topology.segments:
        if s.party != site or not any(segs[i].party != site for i in s.segment_inputs):
            continue
        below, todo = set(), [s.name]
        while todo:  # local segments downstream of s
            n = todo.pop()
            below.add(n)
            todo += [c.name for c in topology.segments if n in c.segment_inputs and c.party == site
                     and c.name not in below]
        if below & heads:
            out.append(s.name)
    return out


def defend(topology: Topology, per_site: Mapping[str, Sequence[CutDefense]]) -> Topology:
    """``topology`` with each site's defenses added where they act, after any it already has.

    A defense that ``protects`` inputs goes on every cut of its site; one that protects labels goes on every
    segment of its site that sends a gradient carrying the site's labels back to another party. A defense with
    no such place is refused: a label defense for labels that are sent in the clear protects nothing.
    """
    sites = {p.name for p in topology.parties if p.data}
    extra: dict[str, list[CutDefense]] = {}
    for site, defenses in per_site.items():
        if site not in sites:
            raise ConfigError(f"defenses for '{site}', which is not a site of topology '{topology.name}'",
                              hint=f"its sites are: {', '.join(sorted(sites))}")
        for d in defenses:
            where = cut_segments(topology, site) if d.protects == "inputs" else tail_segments(topology, site)
            if not where:
                raise ConfigError(
                    f"{d.describe()} has no place at site '{site}' of topology '{topology.name}'",
                    hint="label defenses act where a site keeps its labels and another party sends it its output "
                         "(ushaped, or vertical with ushaped); where labels are sent to the server they leave in "
                         "the clear" if d.protects == "labels" else "this site sends nothing to another party")
            for name in where:
                extra.setdefault(name, []).append(d)
    segments = [replace(s, defenses=(*s.defenses, *extra[s.name])) if s.name in extra else s
                for s in topology.segments]
    return replace(topology, segments=segments)
