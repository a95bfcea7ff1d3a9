"""Validate a Topology and compile it into a Plan: every problem is refused here, before any training."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TopologyError
from ..suggest import did_you_mean
from ..topology.model import LOSSES, MERGES, ROLES, SCHEDULES, Party, Segment, Topology
from .plan import Plan, merge_inputs

__all__ = ["compile_topology"]


def compile_topology(topology: Topology) -> Plan:
    """Validate a topology and compile it. Every problem is refused here, before any training."""
    parties = {p.name: p for p in topology.parties}
    segments = {s.name: s for s in topology.segments}
    _check_names(topology, parties, segments)
    _check_inputs(topology, parties, segments)
    order = _topological_order(topology, segments)
    _check_tasks(topology, parties, segments)
    out_shapes = _infer_shapes(topology, parties, segments, order)
    _check_cuts(topology, parties, segments, out_shapes)
    _check_replicas(topology, parties, segments)
    return Plan(topology, out_shapes, order)


def _check_names(topology: Topology, parties: dict[str, Party], segments: dict[str, Segment]) -> None:
    if len(parties) != len(topology.parties):
        dup = [p.name for p in topology.parties if [q.name for q in topology.parties].count(p.name) > 1]
        raise TopologyError(f"party names must be unique; repeated: {sorted(set(dup))}")
    if len(segments) != len(topology.segments):
        dup = [s.name for s in topology.segments if [t.name for t in topology.segments].count(s.name) > 1]
        raise TopologyError(f"segment names must be unique; repeated: {sorted(set(dup))}")
    if topology.schedule not in SCHEDULES:
        raise TopologyError(f"unknown schedule '{topology.schedule}'", hint=f"use one of {SCHEDULES}")
    for p in topology.parties:
        if p.role not in ROLES:
            raise TopologyError(f"party '{p.name}' has unknown role '{p.role}'", hint=f"use one of {ROLES}")
        if p.role == "site" and not p.data:
            raise TopologyError(f"site '{p.name}' holds no data",
                                hint="declare the data keys it holds with their per-sample shapes, e.g. "
                                     "data={'image': (1, 32, 32)}, or give it the role 'hop' if it only relays")
    for s in topology.segments:
        if s.party not in parties:
            raise TopologyError(f"segment '{s.name}' is placed on unknown party '{s.party}'"
                                f"{did_you_mean(s.party, parties)}", hint=f"parties are: {sorted(parties)}")
        if s.merge not in MERGES:
            raise TopologyError(f"segment '{s.name}' has unknown merge '{s.merge}'", hint=f"use one of {MERGES}")
        if not s.inputs:
            raise TopologyError(f"segment '{s.name}' has no inputs",
                                hint="give it data keys ('data:image') or the names of segments that feed it")
    for name in parties:
        if not any(s.party == name for s in topology.segments):
            raise TopologyError(f"party '{name}' runs no segment", hint="place a segment on it or remove it")


def _check_inputs(topology: Topology, parties: dict[str, Party], segments: dict[str, Segment]) -> None:
    used_data: dict[str, set[str]] = {p: set() for p in parties}
    for s in topology.segments:
        for key in s.data_inputs:
            if key not in parties[s.party].data:
                raise TopologyError(
                    f"segment '{s.name}' on party '{s.party}' reads data '{key}', which '{s.party}' does not "
                    f"hold{did_you_mean(key, parties[s.party].data)}",
                    hint="a segment can only read data held by its own party; raw data never travels")
            used_data[s.party].add(key)
        for src in s.segment_inputs:
            if src not in segments:
                raise TopologyError(f"segment '{s.name}' takes input from unknown segment '{src}'"
                                    f"{did_you_mean(src, segments)}",
                                    hint=f"inputs are segment names or 'data:<key>'; segments are {sorted(segments)}")
    for name, party in parties.items():
        unused = set(party.data) - used_data[name]
        if unused:
            raise TopologyError(f"party '{name}' holds data {sorted(unused)} that no segment reads",
                                hint="feed it to a segment on that party, or drop it from the party's data")


def _topological_order(topology: Topology, segments: dict[str, Segment]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise TopologyError(f"the topology has a cycle: {' -> '.join(cycle)}",
                                hint="segments must form a directed acyclic graph from the data to the heads")
        state[name] = 1
        for src in segments[name].segment_inputs:
            visit(src, path + [name])
        state[name] = 2
        order.append(name)

    for seg in topology.segments:
        visit(seg.name, [])
    return order


def _check_tasks(topology: Topology, parties: dict[str, Party], segments: dict[str, Segment]) -> None:
    if not topology.tasks:
        raise TopologyError("the topology has no task", hint="add a Task(name, head=<segment>, label=<key>)")
    names = [t.name for t in topology.tasks]
    if len(set(names)) != len(names):
        raise TopologyError(f"task names must be unique: {names}")
    heads_upstream: set[str] = set()
    for task in topology.tasks:
        if task.head not in segments:
            raise TopologyError(f"task '{task.name}' has unknown head segment '{task.head}'"
                                f"{did_you_mean(task.head, segments)}")
        if task.loss not in LOSSES:
            raise TopologyError(f"task '{task.name}' has unknown loss '{task.loss}'", hint=f"use one of {LOSSES}")
        owners = [p for p in topology.parties if task.label in p.labels]
        if not owners:
            raise TopologyError(f"no party owns label '{task.label}' of task '{task.name}'",
                                hint="list the label key in the labels of the site that holds it")
        if topology.schedule == "joint" and len(owners) > 1:
            raise TopologyError(f"label '{task.label}' of task '{task.name}' is owned by several parties "
                                f"{[p.name for p in owners]} in a joint schedule; exactly one site owns it",
                                hint="in vertical topologies the labels live at one site")
        head_party = segments[task.head].party
        foreign = [p.name for p in owners if p.name != head_party]
        if foreign and not task.share_labels:
            raise TopologyError(
                f"task '{task.name}': labels '{task.label}' live at {foreign} but its head '{task.head}' runs on "
                f"'{head_party}', and the task does not share labels",
                hint="set share_labels=True to send labels to the head (vanilla), or place the head on the "
                     "labels' site (U-shaped) so that labels never leave it")
        stack = [task.head]
        while stack:
            name = stack.pop()
            if name not in heads_upstream:
                heads_upstream.add(name)
                stack.extend(segments[name].segment_inputs)
    idle = [s.name for s in topology.segments if s.name not in heads_upstream]
    if idle:
        raise TopologyError(f"segments {idle} feed no task", hint="connect them to a head or remove them")


def _infer_shapes(topology: Topology, parties: dict[str, Party], segments: dict[str, Segment],
                  order: list[str]) -> dict[str, Any]:
    """Run every local segment once on zeros (batch of 2, eval mode) to learn and check its output shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in order:
        seg = segments[name]
        in_shapes = [(f"data '{k}'", tuple(parties[seg.party].data[k])) for k in seg.data_inputs]
        in_shapes += [(f"segment '{s}'", shapes[s]) for s in seg.segment_inputs]
        if seg.merge in ("sum", "mean", "route") and len({s for _, s in in_shapes}) > 1:
            raise TopologyError(f"segment '{name}' merges inputs by {seg.merge}, which needs equal shapes, "
                                f"but got {', '.join(f'{w} {s}' for w, s in in_shapes)}",
                                hint="make the cut shapes equal, or merge by concat")
        if seg.merge == "concat" and len(in_shapes) > 1 and len({s[1:] for _, s in in_shapes}) > 1:
            raise TopologyError(f"segment '{name}' concatenates inputs along dim 1, which needs equal trailing "
                                f"dims, but got {', '.join(f'{w} {s}' for w, s in in_shapes)}",
                                hint="flatten the cuts to vectors, or give feature maps the same spatial size")
        if seg.module is None:
            if seg.out_shape is None:
                raise TopologyError(f"segment '{name}' has no module and no declared out_shape",
                                    hint="a segment that runs in another process must declare its out_shape")
            shapes[name] = tuple(seg.out_shape)
            continue
        zeros = [torch.zeros((2, *s)) for _, s in in_shapes]
        x = zeros[0] if seg.merge == "route" else merge_inputs(zeros, seg.merge)
        was_training = seg.module.training
        try:
            with torch.no_grad(), torch.random.fork_rng():
                seg.module.eval()
                y = seg.module(x)
        except Exception as exc:  # a shape mismatch surfaces as any of several torch errors
            raise TopologyError(
                f"segment '{name}' on party '{seg.party}' cannot take its input of per-sample shape "
                f"{tuple(x.shape[1:])} (from {', '.join(w for w, _ in in_shapes)}): {exc}",
                hint="the cut shapes do not match: check the layer sizes on both sides of the cut") from exc
        finally:
            seg.module.train(was_training)
        if not isinstance(y, torch.Tensor):
            raise TopologyError(f"segment '{name}' returns {type(y).__name__}, not a tensor",
                                hint="a segment's forward must return one tensor")
        shape = tuple(y.shape[1:])
        if seg.out_shape is not None and tuple(seg.out_shape) != shape:
            raise TopologyError(f"segment '{name}' declares out_shape {tuple(seg.out_shape)} but produces {shape}")
        shapes[name] = shape
    for task in topology.tasks:
        head = shapes[task.head]
        if task.loss == "bce" and head != (1,):
            raise TopologyError(f"task '{task.name}' (bce) needs head '{task.head}' to output shape (1,), "
                                f"got {head}", hint="end the head with a Linear(..., 1)")
        if task.loss == "ce" and len(head) != 1:
            raise TopologyError(f"task '{task.name}' (ce) needs head '{task.head}' to output class logits "
                                f"(C,), got {head}")
    return shapes


def _check_cuts(topology: Topology, parties: dict[str, Party], segments: dict[str, Segment],
                shapes: dict[str, Any]) -> None:
    for seg in topology.segments:
        for src in seg.segment_inputs:
            producer = segments[src]
            if producer.party == seg.party:
                continue
            raw = parties[producer.party].data
            same = [k for k, s in raw.items() if tuple(s) == shapes[src]]
            if same:
                raise TopologyError(
                    f"cut {src}->{seg.name} carries a tensor of per-sample shape {shapes[src]}, the shape of "
                    f"'{producer.party}''s raw data {same}",
                    hint="a cut that keeps the raw input's shape can carry the raw input itself; add a layer "
                         "on the site that changes the shape (a strided conv, a projection)")


def _check_replicas(topology: Topology, parties: dict[str, Party], segments: dict[str, Segment]) -> None:
    if topology.schedule != "joint" and len(topology.sites) < 2:
        raise TopologyError(f"schedule '{topology.schedule}' needs at least two sites")
    if topology.schedule == "parallel" and topology.replicas:
        if topology.aggregator not in parties:
            raise TopologyError(f"schedule 'parallel' averages replicas at an aggregator, but aggregator "
                                f"'{topology.aggregator}' is not a party", hint="set aggregator='server'")
    for group in topology.replicas:
        for name in group:
            if name not in segments:
                raise TopologyError(f"replica group {group} names unknown segment '{name}'")
        owners = [segments[n].party for n in group]
        if len(set(owners)) != len(owners):
            raise TopologyError(f"replica group {group} has two copies on one party; one copy per site")
        ref = segments[group[0]].module
        ref_shapes = [tuple(p.shape) for p in ref.parameters()] if ref is not None else None
        for name in group[1:]:
            mod = segments[name].module
            if ref_shapes is not None and mod is not None and [tuple(p.shape) for p in mod.parameters()] != ref_shapes:
                raise TopologyError(f"replicas '{group[0]}' and '{name}' have different parameter shapes",
                                    hint="replicas are copies of one segment: build them with the same builder")
