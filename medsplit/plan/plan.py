"""A compiled topology: cut edges with shapes, what may cross, and the ordered ops of a step.

Every party executes the same global op list, skipping ops that are not its own. A ``send`` op is placed
right before its ``recv``, so messages between any two parties are sent in the order they are received
(FIFO per pair suffices) and a receive never waits on a send that comes later (no deadlock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import torch

from ..errors import TopologyError
from ..topology.model import Task, Topology
from ..wire.codecs import CodecChain, edge_codecs
from ..wire.message import Expect, Kind

__all__ = ["Edge", "LabelFlow", "WeightsFlow", "PredictionFlow", "Op", "Plan", "merge_inputs", "edge_name",
           "label_flow_name", "weights_flow_name", "fingerprint_flow_name", "prediction_flow_name"]

Action = Literal["forward", "send", "recv", "loss", "backward", "update", "average", "check", "predict"]


# One function per kind of name: the only places names are built (nothing parses them back).
def edge_name(src: str, dst: str) -> str:
    return f"{src}->{dst}"


def label_flow_name(label: str, src: str, dst: str) -> str:
    return f"labels:{label}:{src}->{dst}"


def weights_flow_name(src: str, dst: str) -> str:
    return f"weights:{src}->{dst}"


def fingerprint_flow_name(src: str, dst: str) -> str:
    return f"fingerprint:{src}->{dst}"


def prediction_flow_name(task: str, src: str, dst: str) -> str:
    return f"predictions:{task}:{src}->{dst}"


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
class PredictionFlow:
    """A head's outputs travelling to the site that owns the task's labels (``medsplit predict`` only)."""

    name: str
    task: str
    src: str
    dst: str


@dataclass(frozen=True)
class Op:
    """One thing one party does in a step.

    ``target`` is a segment, edge, flow or task name; ``group`` the replica group of a weights op;
    ``micro`` the micro-batch of a pipelined step the op works on.
    """

    action: Action
    party: str
    target: str = ""
    kind: Kind | None = None
    group: int = 0
    micro: int = 0


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
                    name = edge_name(src, seg.name)
                    self.edges[name] = Edge(name, src, seg.name, self.segments[src].party, seg.party,
                                            out_shapes[src])
        self.label_flows: dict[str, LabelFlow] = {}
        self.prediction_flows: dict[str, PredictionFlow] = {}
        for task in topology.tasks:
            dst = self.segments[task.head].party
            for owner in self.label_owners(task.label):
                if owner != dst:
                    name = label_flow_name(task.label, owner, dst)
                    self.label_flows[name] = LabelFlow(name, task.name, task.label, owner, dst)
                    name = prediction_flow_name(task.name, dst, owner)
                    self.prediction_flows[name] = PredictionFlow(name, task.name, dst, owner)
        self._ops_cache: dict[tuple[frozenset[str], str, int], tuple[Op, ...]] = {}
        self.codecs: dict[tuple[str, Kind], CodecChain] = edge_codecs(topology.codecs, self.edges)
        # Vertical sites prove that batch k holds the same patients everywhere: each sends a keyed hash of
        # its batch's row IDs to a server, which holds no key and compares them.
        self.fingerprint_checker: str | None = None
        self.fingerprint_flows: dict[str, tuple[str, str]] = {}
        if topology.schedule == "joint" and len(topology.sites) > 1:
            servers = [p.name for p in topology.parties if p.role == "server"]
            if servers:
                self.fingerprint_checker = servers[0]
                for site in topology.sites:
                    self.fingerprint_flows[fingerprint_flow_name(site, servers[0])] = (site, servers[0])
        self.weights_flows: dict[str, WeightsFlow] = {}
        for group in topology.replicas:
            parties = [self.segments[s].party for s in group]
            pairs = [(a, b) for a in parties for b in parties if a != b]
            if topology.schedule == "parallel":
                agg = self.aggregator
                pairs = [(p, agg) for p in parties] + [(agg, p) for p in parties]
            for a, b in pairs:
                name = weights_flow_name(a, b)
                self.weights_flows[name] = WeightsFlow(name, a, b)

    @property
    def aggregator(self) -> str:
        """The party that averages replicas (the parallel schedule)."""
        if self.topology.aggregator is None:
            raise TopologyError(f"topology '{self.topology.name}' has no aggregator to average its replicas",
                                hint="set aggregator='server' on the Topology")
        return self.topology.aggregator

    # --- what may cross, and what to expect -------------------------------------------------------

    def allowed(self) -> set[tuple[str, Kind, str, str]]:
        """Every (edge, kind, src, dst) the topology declares; the Wire refuses anything else."""
        out = set()
        for e in self.edges.values():
            out.add((e.name, Kind.ACTIVATION, e.src_party, e.dst_party))
            out.add((e.name, Kind.GRADIENT, e.dst_party, e.src_party))
        for f in self.label_flows.values():
            out.add((f.name, Kind.LABEL, f.src, f.dst))
        for p in self.prediction_flows.values():
            out.add((p.name, Kind.PREDICTION, p.src, p.dst))
        for w in self.weights_flows.values():
            out.add((w.name, Kind.WEIGHTS, w.src, w.dst))
        for name, (src, dst) in self.fingerprint_flows.items():
            out.add((name, Kind.FINGERPRINT, src, dst))
        return out

    def codec_names(self) -> list[str]:
        """The codec chains this plan's edges use (they go into the wire's name table)."""
        return sorted({c.name for c in self.codecs.values()})

    def peers(self, party: str) -> list[str]:
        """The parties ``party`` exchanges tensors with, by the plan."""
        out = {dst if src == party else src for _, _, src, dst in self.allowed() if party in (src, dst)}
        return sorted(out)

    def label_owners(self, label: str) -> list[str]:
        return [p.name for p in self.topology.parties if label in p.labels]

    def label_spec(self, task: Task) -> tuple[tuple[int, ...], torch.dtype]:
        """Per-sample shape and dtype of a task's labels."""
        if task.loss == "ce":
            return (), torch.int64
        head = self.out_shapes[task.head]
        if task.loss == "bce" or head == (1,):  # one value per sample travels as a scalar per row
            return (), torch.float32
        return head, torch.float32

    def prediction_shape(self, task: Task) -> tuple[int, ...]:
        """Per-sample shape of a task's predictions: a probability (bce), class probabilities (ce), values (mse)."""
        return () if task.loss == "bce" else self.out_shapes[task.head]

    def expect(self, op: Op, step: int, phase: str, exact_shape: tuple[int, ...] | None = None) -> Expect:
        """What the receiving party of a ``recv`` op should get."""
        return replace(self._expect(op, step, phase, exact_shape), micro=op.micro) if op.micro else \
            self._expect(op, step, phase, exact_shape)

    def _expect(self, op: Op, step: int, phase: str, exact_shape: tuple[int, ...] | None) -> Expect:
        if op.kind is Kind.FINGERPRINT:
            src, dst = self.fingerprint_flows[op.target]
            return Expect(step, op.target, Kind.FINGERPRINT, src, dst, (32,), torch.uint8, exact=True, phase=phase)
        if op.kind is Kind.LABEL:
            flow = self.label_flows[op.target]
            shape, dtype = self.label_spec(self.tasks[flow.task])
            return Expect(step, flow.name, Kind.LABEL, flow.src, flow.dst, shape, dtype, phase=phase)
        if op.kind is Kind.PREDICTION:
            pred = self.prediction_flows[op.target]
            return Expect(step, pred.name, Kind.PREDICTION, pred.src, pred.dst,
                          self.prediction_shape(self.tasks[pred.task]), torch.float32, phase=phase)
        if op.kind is Kind.WEIGHTS:
            wflow = self.weights_flows[op.target]
            return Expect(step, wflow.name, Kind.WEIGHTS, wflow.src, wflow.dst, (self.replica_numel(op.group),),
                          torch.float32, exact=True, phase="sync")
        edge = self.edges[op.target]
        if op.kind is Kind.ACTIVATION:
            return Expect(step, edge.name, Kind.ACTIVATION, edge.src_party, edge.dst_party, edge.shape,
                          torch.float32, phase=phase)
        if exact_shape is None:
            raise TopologyError(f"a gradient on edge '{edge.name}' is checked against the exact activation it "
                                "answers, and none was given")
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

    def step_ops(self, active_sites: Iterable[str], phase: Literal["train", "eval", "predict"] = "train",
                 micro_batches: int = 1) -> tuple[Op, ...]:
        """The ops of one step in which ``active_sites`` take part (cached: a step's shape never changes).

        ``micro_batches`` > 1 (training) pipelines the step: forwards of every micro-batch, then backwards, then
        one update per party; a site forwards micro-batch i + 1 while i crosses and the server computes on it.
        Gradients accumulate, so parameters are the plain step's where a sample's loss does not depend on the
        other samples of its batch (no batch norm, no batch-level defense)."""
        key = (frozenset(active_sites), phase, micro_batches if phase == "train" else 1)
        if key not in self._ops_cache:
            ops = self._step_ops(key[0], phase)
            self._ops_cache[key] = tuple(ops if key[2] == 1 else _pipelined(ops, key[2]))
        return self._ops_cache[key]

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
                edge = edge_name(src, name)
                if src in active and edge in self.edges:
                    ops += [Op("send", self.edges[edge].src_party, edge, Kind.ACTIVATION),
                            Op("recv", seg.party, edge, Kind.ACTIVATION)]
            ops.append(Op("forward", seg.party, name))
        for task in self.topology.tasks:
            if task.head not in active:
                continue
            dst = self.segments[task.head].party
            owners = [o for o in self.label_owners(task.label) if o in active_sites or o == dst]
            if len(owners) != 1:
                raise TopologyError(
                    f"task '{task.name}': {len(owners)} active parties own label '{task.label}' "
                    f"({owners}) when sites {sorted(active_sites)} take part; exactly one must")
            owner = owners[0]
            if phase == "predict":  # no labels, no loss: the outputs go to (or stay at) the labels' site
                ops.append(Op("predict", dst, task.name))
                if owner != dst:
                    flow = prediction_flow_name(task.name, dst, owner)
                    ops += [Op("send", dst, flow, Kind.PREDICTION), Op("recv", owner, flow, Kind.PREDICTION)]
                continue
            if owner != dst:
                flow = label_flow_name(task.label, owner, dst)
                ops += [Op("send", owner, flow, Kind.LABEL), Op("recv", dst, flow, Kind.LABEL)]
            ops.append(Op("loss", dst, task.name))
        if phase == "train":
            for name in reversed(active):
                seg = self.segments[name]
                for consumer in self.consumers[name]:
                    edge = edge_name(name, consumer)
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

    def _weights(self, src: str, dst: str, group: int) -> list[Op]:
        target = weights_flow_name(src, dst)
        return [Op("send", src, target, Kind.WEIGHTS, group), Op("recv", dst, target, Kind.WEIGHTS, group)]

    def handoff_ops(self, src: str, dsts: Iterable[str]) -> list[Op]:
        """Site ``src`` hands its client weights to each of ``dsts`` (horizontal, one site after another)."""
        return [op for g in range(len(self.topology.replicas)) for dst in dsts for op in self._weights(src, dst, g)]

    def average_ops(self, contributors: Iterable[str], receivers: Iterable[str] | None = None) -> list[Op]:
        """Each contributor sends its client weights to the aggregator, which averages them and sends the
        average to every receiver (the contributors, by default).

        With one contributor this is a broadcast: SplitFed starts every site from the first site's weights.
        """
        agg = self.aggregator
        contributors = list(contributors)
        receivers = contributors if receivers is None else list(receivers)
        ops: list[Op] = []
        for g in range(len(self.topology.replicas)):
            for site in contributors:
                ops += self._weights(site, agg, g)
            ops.append(Op("average", agg, "", group=g))
            for site in receivers:
                ops += self._weights(agg, site, g)
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


def _pipelined(ops: list[Op], micro_batches: int) -> list[Op]:
    """A plain training step's ops over ``micro_batches``: checks once, forwards of each micro-batch, backwards
    of each, updates once. Every recv still follows its send, so no party waits on one that comes later."""
    backward = [i for i, op in enumerate(ops) if op.action == "backward" or op.kind is Kind.GRADIENT]
    first_b = backward[0] if backward else len(ops)
    first_f = next((i for i, op in enumerate(ops) if op.kind is not Kind.FINGERPRINT and op.action != "check"),
                   len(ops))
    first_u = next((i for i, op in enumerate(ops) if op.action == "update"), len(ops))
    forward, back = ops[first_f:first_b], ops[first_b:first_u]
    return (ops[:first_f] + [replace(op, micro=m) for m in range(micro_batches) for op in forward]
            + [replace(op, micro=m) for m in range(micro_batches) for op in back] + ops[first_u:])


def merge_inputs(xs: list[torch.Tensor], how: str) -> torch.Tensor:
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
