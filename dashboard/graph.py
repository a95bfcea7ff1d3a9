"""Draw a design as Graphviz DOT: a compiled plan (parties holding segments, cuts with shape and bytes, a legend
of edge styles), or, when the engine refuses the design, its sites as written with the faulty element in red."""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

from medsplit.plan import Plan

from .experiments import fmt_bytes

__all__ = ["topology_dot", "sketch_dot", "LEGEND"]

_FILL = {"site": "#e8f1fb", "server": "#fdf1e3", "hop": "#eef7ea"}
_LINE = {"site": "#2f6db5", "server": "#c97a1e", "hop": "#4b8a3c"}
_FAULT = "#c0392b"
_HEAD = ['  graph [fontname="Helvetica", fontsize=11, labeljust=l, labelloc=t];',
         '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=10];',
         '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];']
#: edge styles, as the legend shows them: (sample line, colour, meaning)
LEGEND = (("━━━", "#2f6db5", "cut: activations →, gradients ← (colour of the sender)"),
          ("╍╍╍", "#b08900", "labels, to where the loss is computed"),
          ("┈┈┈", "#777777", "client weights (hand-off or averaging)"),
          ("───", "#999999", "within a party"))


def _q(text: object) -> str:
    """A DOT string literal; newlines become line breaks."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _legend() -> list[str]:
    """One node holding the legend (a table of line samples), out of the way of the parties."""
    rows = "".join(f'<tr><td align="left"><font color="{colour}">{line}</font></td>'
                   f'<td align="left"><font point-size="9">{html.escape(text)}</font></td></tr>'
                   for line, colour, text in LEGEND)
    return [f'  legend [shape=plain, fillcolor=none, label=<<table border="1" color="#cccccc" cellborder="0" '
            f'cellpadding="2" cellspacing="0"><tr><td colspan="2" align="left"><b>edges</b></td></tr>{rows}</table>>];']


def topology_dot(plan: Plan, batch_size: int) -> str:
    """DOT text of ``plan``; each cut edge says its per-step tensor shape and bytes per step, each way."""
    topo = plan.topology
    out = ["digraph topology {", "  rankdir=LR; compound=true; nodesep=0.4; ranksep=1.1; newrank=true;", *_HEAD]
    for i, party in enumerate(topo.parties):
        out += [f"  subgraph cluster_{i} {{",
                (f"    label={_q(f'{party.name} ({party.role})')}; style=\"rounded,filled\"; margin=14; "
                 f"fillcolor={_q(_FILL.get(party.role, '#f4f4f4'))}; color={_q(_LINE.get(party.role, '#888888'))};")]
        for key, shape in party.data.items():
            out.append(f"    {_q(f'data:{party.name}:{key}')} [label={_q(f'{key} {tuple(shape)}')}, shape=note];")
        if party.labels:
            out.append(f"    {_q(f'labels:{party.name}')} [label={_q('labels: ' + ', '.join(party.labels))}, "
                       'shape=note, fillcolor="#fff8d6"];')
        for seg in plan.order:
            if plan.segments[seg].party == party.name:
                heads = [t.name for t in plan.tasks.values() if t.head == seg]
                text = seg.split(".", 1)[-1] + (f"\nloss: {', '.join(heads)}" if heads else "")
                out.append(f"    {_q(seg)} [label={_q(text)}];")
        out.append("  }")
    for segment in plan.segments.values():
        for key in segment.data_inputs:
            out.append(f"  {_q(f'data:{segment.party}:{key}')} -> {_q(segment.name)} [color=\"#999999\"];")
        for src in segment.segment_inputs:
            if plan.segments[src].party == segment.party:
                out.append(f"  {_q(src)} -> {_q(segment.name)} [color=\"#999999\"];")
    for e in plan.edges.values():
        per_step = 4 * batch_size * math.prod(e.shape)
        label = f"{(batch_size, *e.shape)}\n{fmt_bytes(per_step)}/step each way"
        color = _LINE.get(plan.parties[e.src_party].role, "#333333")
        # into a box's side (west), not its top: an arrowhead never sits on the party's title above it
        out.append(f"  {_q(e.src)}:e -> {_q(e.dst)}:w [label={_q(label)}, penwidth=2, color={_q(color)}, "
                   "dir=both, arrowtail=empty];")
    for f in plan.label_flows.values():
        label = f"labels '{f.label}'\n{fmt_bytes(4 * batch_size)}/step"
        out.append(f"  {_q(f'labels:{f.src}')}:e -> {_q(plan.tasks[f.task].head)}:w [label={_q(label)}, "
                   'style=dashed, color="#b08900"];')
    out += _weights_edges(plan)
    out += _legend()
    out.append("}")
    return "\n".join(out)


def _weights_edges(plan: Plan) -> list[str]:
    """Client weights between replicas: handed on in turn (horizontal) or averaged at the aggregator (SplitFed).

    Unlabelled (the legend says what dotted means) and left out of the layout, so they never sit on a title.
    """
    topo = plan.topology
    out = []
    for group in topo.replicas:
        if topo.schedule == "parallel" and topo.aggregator:
            agg = _first_segment(plan, topo.aggregator)
            out += [f"  {_q(seg)}:s -> {_q(agg)}:s [style=dotted, dir=both, color=\"#777777\", constraint=false, "
                    'tooltip="weights (averaged)"];' for seg in group if agg]
        else:
            out += [f"  {_q(a)}:s -> {_q(b)}:n [style=dotted, color=\"#777777\", constraint=false, "
                    'tooltip="weights (hand-off)"];' for a, b in itertools.pairwise(group)]
    return out


def _first_segment(plan: Plan, party: str) -> str | None:
    return next((s for s in plan.order if plan.segments[s].party == party), None)


def sketch_dot(data: Mapping[str, Any], key: str | None, problem: str) -> str:
    """The design as written (sites, their data, the server), not compiled: the engine refused it. The element
    ``key`` points at (a site, one of its data keys, the topology) is red and carries ``problem``."""
    found = data.get("sites")
    sites: list[Any] = found if isinstance(found, list) else []
    found = data.get("topology")
    topo: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    m = re.match(r"sites\[(\d+)\](?:\.modalities\.([^.\[]+))?", key or "")
    bad_site, bad_key = (int(m.group(1)), m.group(2)) if m else (None, None)
    short = problem if len(problem) <= 90 else problem[:87] + "..."
    out = ["digraph design {", "  rankdir=LR; nodesep=0.4; ranksep=1.1;", *_HEAD,
           f"  label={_q('not compiled: the engine refuses this design (' + (key or 'see the error') + ')')}; "
           f"fontcolor={_q(_FAULT)};"]
    for i, site in enumerate(sites):
        site = site if isinstance(site, Mapping) else {}
        name = str(site.get("name", f"sites[{i}]"))
        party = str(site.get("party") or name)
        faulty = bad_site == i and bad_key is None
        line = _FAULT if faulty else _LINE["site"]
        out += [f"  subgraph cluster_s{i} {{",
                f"    label={_q(f'{name} ({party})' + (chr(10) + short if faulty else ''))}; style=\"rounded,filled\"; "
                f"fillcolor={_q('#fbe9e7' if faulty else _FILL['site'])}; color={_q(line)}; "
                f"fontcolor={_q(_FAULT if faulty else 'black')}; penwidth={3 if faulty else 1};"]
        found = site.get("modalities")
        mods: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        for k, spec in mods.items():
            spec = spec if isinstance(spec, Mapping) else {}
            wrong = bad_site == i and bad_key == k
            text = f"{k} {spec.get('shape')}" + (f"\n{short}" if wrong else "")
            style = f', color={_q(_FAULT)}, fontcolor={_q(_FAULT)}, penwidth=3' if wrong else ""
            out.append(f"    {_q(f's{i}:{k}')} [label={_q(text)}, shape=note{style}];")
        if not mods:
            out.append(f"    {_q(f's{i}:none')} [label=\"no data\", shape=note];")
        out.append("  }")
    faulty = bool(key and (key.startswith("topology") or key == "sites"))
    label = f"server\n{topo.get('preset') or 'preset?'}" + (f"\n{short}" if faulty else "")
    style = f', color={_q(_FAULT)}, fontcolor={_q(_FAULT)}, penwidth=3' if faulty else ""
    out.append(f"  server [label={_q(label)}, fillcolor={_q(_FILL['server'])}{style}];")
    for i, site in enumerate(sites):
        found = site.get("modalities") if isinstance(site, Mapping) else None
        mods = found if isinstance(found, Mapping) else {}
        first = next(iter(mods), "none")
        out.append(f'  {_q(f"s{i}:{first}")} -> server [style=dashed, color="#999999"];')
    out.append("}")
    return "\n".join(out)
