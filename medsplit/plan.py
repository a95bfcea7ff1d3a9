"""Compile a Topology into a Plan: validated graph, cut edges with shapes, and the ordered ops of a step.

Every party executes the same global op list, skipping ops that are not its own. A ``send`` op is placed
right before its ``recv``, so messages between any two parties are sent in the order they are received
(FIFO per pair suffices) and a receive never waits on a send that comes later (no deadlock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import torch

from .errors import TopologyError
from .suggest import did_you_mean
from .topology import LOSSES, MERGES, ROLES, SCHEDULES, Task, Topology
from .wire import Expect, Kind

__all__ = ["Edge", "LabelFlow", "WeightsFlow", "Op", "Plan", "compile_topology"]


@dataclass(frozen=True)
class Edge:
    """A cut: segment ``src`` on one party feeds segment ``dst`` on another."""

    name: str
    src: str
    dst: str
    src_party: str
    dst_party: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LabelFlow:
    """Labels travelling from their owner to the party that computes a task's loss (vanilla only)."""

    name: str
    task: str
    label: str
    src: str
    dst: str


@dataclass(frozen=True)
class WeightsFlow:
    """Client weights travelling between replicas (horizontal hand-off, SplitFed averaging)."""

    name: str
    src: str
    dst: str


@dataclass(frozen=True)
class Op:
    """One thing one party does in a step. ``target`` is a segment, edge, label flow or task name."""

    action: Literal["forward", "send", "recv", "loss", "backward", "update", "average", "check", "predict"]
    party: str
    target: str = ""
    kind: Kind | None = None




class Plan:
    """A validated topology. Build with ``compile_topology``."""

    def __init__(self, topology: Topology, out_shapes: dict[str, tuple[int, ...]], order: list[str]) -> None:
        self.topology = topology
        self.out_shapes = out_shapes
        self.order = order
        self.segments = {s.name: s for s in topology.segments}
        self.parties = {p.name: p for p in topology.parties}
        self.tasks = {t.name: t for t in topology.tasks}
        self.edges: dict[str, Edge] = {}
        self.consumers: dict[str, list[str]] = {s: [] for s in self.segments}
        for seg in topology.segments:
            for src in seg.segment_inputs:
                self.consumers[src].append(seg.name)
                if self.segments[src].party != seg.party:
                    name = f"{src}->{seg.name}"
                    self.edges[name] = Edge(name, src, seg.name, self.segments[src].party, seg.party,
                                            out_shapes[src])
        self.label_flows: dict[str, LabelFlow] = {}
        for task in topology.tasks:
            for owner in self.label_owners(task.label):
                dst = self.segments[task.head].party
                if owner != dst:
                    name = f"labels:{task.label}:{owner}->{dst}"
                    self.label_flows[name] = LabelFlow(name, task.name, task.label, owner, dst)
        self._ops_cache: dict[tuple[frozenset[str], str], tuple[Op, ...]] = {}
        # Vertical sites prove that batch k holds the same patients everywhere: each sends a keyed hash of
        # its batch's row IDs to a server, which holds no key and compares them.
        self.fingerprint_checker: str | None = None
        self.fingerprint_flows: dict[str, tuple[str, str]] = {}
        if topology.schedule == "joint" and len(topology.sites) > 1:
            servers = [p.name for p in topology.parties if p.role == "server"]
            if servers:
                self.fingerprint_checker = servers[0]
                for site in topology.sites:
                    self.fingerprint_flows[f"fingerprint:{site}->{servers[0]}"] = (site, servers[0])
        self.weights_flows: dict[str, WeightsFlow] = {}
        for group in topology.replicas:
            parties = [self.segments[s].party for s in group]
            pairs = [(a, b) for a in parties for b in parties if a != b]
            if topology.schedule == "parallel":
                agg = topology.aggregator
                pairs = [(p, agg) for p in parties] + [(agg, p) for p in parties]
            for a, b in pairs:
                name = f"weights:{a}->{b}"
                self.weights_flows[name] = WeightsFlow(name, a, b)

    # --- what may cross, and what to expect -------------------------------------------------------

    def allowed(self) -> set[tuple[str, Kind, str, str]]:
        """Every (edge, kind, src, dst) the topology declares; the Wire refuses anything else."""
        out = set()
        for e in self.edges.values():
            out.add((e.name, Kind.ACTIVATION, e.src_party, e.dst_party))
            out.add((e.name, Kind.GRADIENT, e.dst_party, e.src_party))
        for f in self.label_flows.values():
            out.add((f.name, Kind.LABEL, f.src, f.dst))
        for w in self.weights_flows.values():
            out.add((w.name, Kind.WEIGHTS, w.src, w.dst))
        for name, (src, dst) in self.fingerprint_flows.items():
            out.add((name, Kind.FINGERPRINT, src, dst))
        return out

    def label_owners(self, label: str) -> list[str]:
        return [p.name for p in self.topology.parties if label in p.labels]

    def label_spec(self, task: Task) -> tuple[tuple[int, ...], torch.dtype]:
        """Per-sample shape and dtype of a task's labels."""
        if task.loss == "ce":
            return (), torch.int64
        if task.loss == "bce":
            return (), torch.float32
        return self.out_shapes[task.head], torch.float32

    def expect(self, op: Op, step: int, phase: str, exact_shape: tuple[int, ...] | None = None) -> Expect:
        """What the receiving party of a ``recv`` op should get."""
        if op.kind is Kind.FINGERPRINT:
            src, dst = self.fingerprint_flows[op.target]
            return Expect(step, op.target, Kind.FINGERPRINT, src, dst, (32,), torch.uint8, exact=True, phase=phase)
        if op.kind is Kind.LABEL:
            flow = self.label_flows[op.target]
            shape, dtype = self.label_spec(self.tasks[flow.task])
            return Expect(step, flow.name, Kind.LABEL, flow.src, flow.dst, shape, dtype, phase=phase)
        edge = self.edges[op.target]
        if op.kind is Kind.ACTIVATION:
            return Expect(step, edge.name, Kind.ACTIVATION, edge.src_party, edge.dst_party, edge.shape,
                          torch.float32, phase=phase)
        assert exact_shape is not None, "a gradient is checked against the exact activation it answers"
        return Expect(step, edge.name, Kind.GRADIENT, edge.dst_party, edge.src_party, exact_shape,
                      torch.float32, exact=True, phase=phase)

    # --- the ops of one step ------------------------------------------------------------------------

    def active_segments(self, active_sites: frozenset[str]) -> list[str]:
        """Segments that run when ``active_sites`` take part, in topological order."""
        sites = set(self.topology.sites)
        active: list[str] = []
        for name in self.order:
            seg = self.segments[name]
            if seg.party in sites and seg.party not in active_sites:
                continue
            fed = [i for i in seg.segment_inputs if i in active]
            if seg.merge == "route":
                if len(fed) > 1:
                    raise TopologyError(
                        f"segment '{name}' routes one input per step, but {fed} are all active",
                        hint="a 'route' merge needs the 'turns' or 'parallel' schedule (one site per step)")
                if not fed and not seg.data_inputs:
                    continue
            elif len(fed) != len(seg.segment_inputs):
                continue
            active.append(name)
        return active

    def step_ops(self, active_sites: Iterable[str], phase: Literal["train", "eval", "predict"] = "train") -> list[Op]:
        """The ops of one step in which ``active_sites`` take part (cached: a step's shape never changes)."""
        key = (frozenset(active_sites), phase)
        if key not in self._ops_cache:
            self._ops_cache[key] = tuple(self._step_ops(*key))
        return list(self._ops_cache[key])

    def _step_ops(self, active_sites: frozenset[str], phase: str) -> list[Op]:
        active = self.active_segments(active_sites)
        ops: list[Op] = []
        if self.fingerprint_checker is not None:
            for flow, (src, dst) in self.fingerprint_flows.items():
                ops += [Op("send", src, flow, Kind.FINGERPRINT), Op("recv", dst, flow, Kind.FINGERPRINT)]
            ops.append(Op("check", self.fingerprint_checker, "fingerprints"))
        for name in active:
            seg = self.segments[name]
            for src in seg.segment_inputs:
                edge = f"{src}->{name}"
                if src in active and edge in self.edges:
                    ops += [Op("send", self.edges[edge].src_party, edge, Kind.ACTIVATION),
                            Op("recv", seg.party, edge, Kind.ACTIVATION)]
            ops.append(Op("forward", seg.party, name))
        for task in self.topology.tasks:
            if task.head not in active:
                continue
            dst = self.segments[task.head].party
            if phase == "predict":  # no labels, no loss: the head's party keeps its outputs
                ops.append(Op("predict", dst, task.name))
                continue
            owners = [o for o in self.label_owners(task.label) if o in active_sites or o == dst]
            if len(owners) != 1:
                raise TopologyError(
                    f"task '{task.name}': {len(owners)} active parties own label '{task.label}' "
                    f"({owners}) when sites {sorted(active_sites)} take part; exactly one must")
            if owners[0] != dst:
                flow = f"labels:{task.label}:{owners[0]}->{dst}"
                ops += [Op("send", owners[0], flow, Kind.LABEL), Op("recv", dst, flow, Kind.LABEL)]
            ops.append(Op("loss", dst, task.name))
        if phase == "train":
            for name in reversed(active):
                seg = self.segments[name]
                for consumer in self.consumers[name]:
                    edge = f"{name}->{consumer}"
                    if consumer in active and edge in self.edges:
                        ops += [Op("send", self.edges[edge].dst_party, edge, Kind.GRADIENT),
                                Op("recv", seg.party, edge, Kind.GRADIENT)]
                ops.append(Op("backward", seg.party, name))
            for party in dict.fromkeys(self.segments[n].party for n in active):
                ops.append(Op("update", party))
        return ops

    # --- replicas: hand-off (turns) and averaging (parallel) ------------------------------------------

    def replica_numel(self, group: int) -> int:
        """Length of the flat weight vector of a replica group (floating parameters and buffers)."""
        for name in self.topology.replicas[group]:
            module = self.segments[name].module
            if module is not None:
                return sum(t.numel() for t in module.state_dict().values() if t.is_floating_point())
        raise TopologyError(f"replica group {group} has no local module to size its weights")

    def expect_weights(self, flow: WeightsFlow, group: int, step: int) -> Expect:
        return Expect(step, flow.name, Kind.WEIGHTS, flow.src, flow.dst, (self.replica_numel(group),),
                      torch.float32, exact=True, phase="sync")

    def handoff_ops(self, src: str, dsts: Iterable[str]) -> list[Op]:
        """Site ``src`` hands its client weights to each of ``dsts`` (horizontal, one site after another)."""
        ops: list[Op] = []
        for g in range(len(self.topology.replicas)):
            for dst in dsts:
                target = f"weights:{src}->{dst}#{g}"
                ops += [Op("send", src, target, Kind.WEIGHTS), Op("recv", dst, target, Kind.WEIGHTS)]
        return ops

    def average_ops(self, sites: Iterable[str]) -> list[Op]:
        """Every site sends its client weights to the aggregator, which averages them and sends them back."""
        agg = self.topology.aggregator
        sites = list(sites)
        ops: list[Op] = []
        for g in range(len(self.topology.replicas)):
            for site in sites:
                target = f"weights:{site}->{agg}#{g}"
                ops += [Op("send", site, target, Kind.WEIGHTS), Op("recv", agg, target, Kind.WEIGHTS)]
            ops.append(Op("average", agg, str(g)))
            for site in sites:
                target = f"weights:{agg}->{site}#{g}"
                ops += [Op("send", agg, target, Kind.WEIGHTS), Op("recv", site, target, Kind.WEIGHTS)]
        return ops

    def describe(self) -> str:
        """A text drawing of the topology: parties, their segments, and the cut edges with shapes."""
        lines = [f"topology '{self.topology.name}' (schedule: {self.topology.schedule})"]
        for party in self.topology.parties:
            segs = [s for s in self.order if self.segments[s].party == party.name]
            extra = f" data={dict(party.data)}" if party.data else ""
            extra += f" labels={list(party.labels)}" if party.labels else ""
            lines.append(f"  [{party.role}] {party.name}: {', '.join(segs)}{extra}")
        for e in self.edges.values():
            lines.append(f"  cut {e.name}: {e.src_party} -> {e.dst_party}, per sample {e.shape}")
        for f in self.label_flows.values():
            lines.append(f"  labels '{f.label}': {f.src} -> {f.dst} (shared for task '{f.task}')")
        return "\n".join(lines)


# --- validation -------------------------------------------------------------------------------------


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


def _check_names(topology: Topology, parties: dict, segments: dict) -> None:
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


def _check_inputs(topology: Topology, parties: dict, segments: dict) -> None:
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


def _topological_order(topology: Topology, segments: dict) -> list[str]:
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


def _check_tasks(topology: Topology, parties: dict, segments: dict) -> None:
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


def _infer_shapes(topology: Topology, parties: dict, segments: dict, order: list[str]) -> dict:
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
        x = zeros[0] if seg.merge == "route" else _merge(zeros, seg.merge)
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


def _check_cuts(topology: Topology, parties: dict, segments: dict, shapes: dict) -> None:
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


def _check_replicas(topology: Topology, parties: dict, segments: dict) -> None:
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


def _merge(xs: list[torch.Tensor], how: str) -> torch.Tensor:
    """Combine a segment's inputs; one input passes through."""
    if len(xs) == 1:
        return xs[0]
    if how == "concat":
        return torch.cat(xs, dim=1)
    if how == "sum":
        return torch.stack(xs).sum(0)
    if how == "mean":
        return torch.stack(xs).mean(0)
    raise TopologyError(f"merge '{how}' cannot combine {len(xs)} active inputs")
