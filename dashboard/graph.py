"""Draw a compiled plan as Graphviz DOT: parties as boxes holding their segments, cuts labelled with shape and bytes."""

from __future__ import annotations

import itertools
import math

from medsplit.plan import Plan

from .experiments import fmt_bytes

__all__ = ["topology_dot"]

_FILL = {"site": "#e8f1fb", "server": "#fdf1e3", "hop": "#eef7ea"}
_LINE = {"site": "#2f6db5", "server": "#c97a1e", "hop": "#4b8a3c"}


def _q(text: object) -> str:
    """A DOT string literal; newlines become line breaks."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def topology_dot(plan: Plan, batch_size: int) -> str:
    """DOT text of ``plan``; each cut edge says its per-step tensor shape and bytes per step, each way."""
    topo = plan.topology
    out = ["digraph topology {", "  rankdir=LR; compound=true; nodesep=0.35; ranksep=0.9;",
           '  graph [fontname="Helvetica", fontsize=11];',
           '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9];']
    for i, party in enumerate(topo.parties):
        out += [f"  subgraph cluster_{i} {{",
                (f"    label={_q(f'{party.name} ({party.role})')}; style=\"rounded,filled\"; "
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
    for seg in plan.segments.values():
        for key in seg.data_inputs:
            out.append(f"  {_q(f'data:{seg.party}:{key}')} -> {_q(seg.name)} [color=\"#999999\"];")
        for src in seg.segment_inputs:
            if plan.segments[src].party == seg.party:
                out.append(f"  {_q(src)} -> {_q(seg.name)} [color=\"#999999\"];")
    for e in plan.edges.values():
        per_step = 4 * batch_size * math.prod(e.shape)
        label = f"{(batch_size, *e.shape)}\n{fmt_bytes(per_step)}/step each way"
        color = _LINE.get(plan.parties[e.src_party].role, "#333333")
        out.append(f"  {_q(e.src)} -> {_q(e.dst)} [label={_q(label)}, penwidth=2, color={_q(color)}, "
                   "dir=both, arrowtail=empty];")
    for f in plan.label_flows.values():
        label = f"labels '{f.label}'\n{fmt_bytes(4 * batch_size)}/step"
        out.append(f"  {_q(f'labels:{f.src}')} -> {_q(plan.tasks[f.task].head)} [label={_q(label)}, "
                   'style=dashed, color="#b08900"];')
    out += _weights_edges(plan)
    out.append("}")
    return "\n".join(out)


def _weights_edges(plan: Plan) -> list[str]:
    """Client weights between replicas: handed on in turn (horizontal) or averaged at the aggregator (SplitFed)."""
    topo = plan.topology
    out = []
    for group in topo.replicas:
        if topo.schedule == "parallel" and topo.aggregator:
            agg = _first_segment(plan, topo.aggregator)
            out += [f"  {_q(seg)} -> {_q(agg)} [xlabel=\"weights (averaged)\", style=dotted, dir=both, "
                    'color="#777777", constraint=false];' for seg in group if agg]
        else:
            out += [f"  {_q(a)} -> {_q(b)} [xlabel=\"weights (hand-off)\", style=dotted, color=\"#777777\", "
                    "constraint=false];" for a, b in itertools.pairwise(group)]
    return out


def _first_segment(plan: Plan, party: str) -> str | None:
    return next((s for s in plan.order if plan.segments[s].party == party), None)
