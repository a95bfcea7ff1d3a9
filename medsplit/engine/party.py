"""A party's runtime: its segments, optimizer and per-step state; runs its own part of every unit of the plan.

``PartyRunner.unit_ops`` is the one place where a party executes a unit (a training step, an evaluation
batch, a weight sync); in-process executors, nodes and benchmarks all drive it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Generator
from typing import Any, get_args

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..align.fingerprint import check_fingerprints
from ..errors import DataError
from ..plan.plan import Action, Op, Plan, edge_name, merge_inputs
from ..topology.defenses import distance_correlation
from ..wire import Kind, Message, Wire
from .metrics import task_loss, task_metrics
from .step_state import OptimizerFactory, StepState, default_optimizer, joined
from .units import FINGERPRINT_KEY, Batch, Unit, flat_state, load_batch, load_flat_state, party_device, split_batch

__all__ = ["PartyRunner", "Unit", "OptimizerFactory", "default_optimizer", "load_batch", "FINGERPRINT_KEY",
           "flat_state", "load_flat_state", "party_device"]


_HANDLERS = {a: f"_{a}" for a in get_args(Action)}  # looked up per op, so a test can still spy on one


class PartyRunner:
    """Runs one party's part of every unit. Holds the only references to its batches and its segments."""

    def __init__(self, name: str, plan: Plan, wire: Wire, optimizer: OptimizerFactory = default_optimizer) -> None:
        self.name = name
        self.plan = plan
        self.wire = wire
        self.device = party_device(plan, name)
        self.segments = {s.name: s for s in plan.topology.segments if s.party == name}
        self.modules = {n: s.module for n, s in self.segments.items() if s.module is not None}
        if self.device.type != "cpu":
            for module in self.modules.values():
                module.to(self.device)
        params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = optimizer(params) if params else None
        self.replicas = {i: next((s for s in g if s in self.segments), None)
                         for i, g in enumerate(plan.topology.replicas)}
        self._cut_sources = {e.src for e in plan.edges.values()}
        self._task_labels: dict[str, list[str]] = {}
        self._state: dict[int, StepState] = {}
        self._weights_in: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
        self._averaged: dict[int, torch.Tensor] = {}
        self._round_averaged = False
        self.rows_seen: dict[str, int] = defaultdict(int)  # rows received per site since the last average
        self.train_loss: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.eval_preds: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = defaultdict(lambda: ([], []))
        self.eval_dcor: dict[str, list[float]] = defaultdict(list)
        self.predictions: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.flops_per_step: int | None = None
        self.compute_seconds = 0.0
        self._flops = 0


    def unit_ops(self, unit: Unit) -> Generator[Op, None, None]:
        """Executes this party's ops of ``unit`` in order, yielding after each one.

        ``run_unit`` runs them all; an in-process executor that holds several parties in one thread
        advances each party's iterator in the order of the global op list instead.
        """
        spec = unit.spec
        self._begin(spec.step, spec.phase, unit.batches.get(self.name), spec.micro_batches, spec.batch_rows)
        try:
            for op in spec.ops:
                if op.party == self.name:
                    self._run(op, spec.step, spec.phase)
                    yield op
        finally:
            self._finish(spec.step, spec.phase)

    def run_unit(self, unit: Unit) -> None:
        for _ in self.unit_ops(unit):
            pass

    def _begin(self, step: int, phase: str, batch: Batch | None, micro_batches: int = 1, batch_rows: int = 0) -> None:
        train = phase == "train"
        for module in self.modules.values():
            if module.training != train:  # a recursive walk of the module tree, only when the mode changes
                module.train(train)
        batch = batch or {}
        if self.device.type != "cpu":
            batch = {k: v if k == FINGERPRINT_KEY else v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if micro_batches == 1:
            self._state[step] = StepState(batch=batch)
            return
        parts = split_batch(batch, micro_batches) if batch else [{} for _ in range(micro_batches)]
        first = StepState(batch=parts[0], batch_rows=batch_rows)
        first.micros = [StepState(batch=b, batch_rows=batch_rows) for b in parts[1:]]
        self._state[step] = first

    def _st(self, step: int, micro: int) -> StepState:
        st = self._state[step]
        return st.micros[micro - 1] if micro else st

    def _finish(self, step: int, phase: str) -> None:
        self._state.pop(step, None)
        if self._round_averaged:  # FedAvg weights count the rows of one round, never of the run so far
            self.rows_seen.clear()
            self._round_averaged = False

    def _run(self, op: Op, step: int, phase: str) -> None:
        handler: Callable[[Op, int, str], None] = getattr(self, _HANDLERS[op.action])
        if self.flops_per_step is None and phase == "train" and op.action not in ("send", "recv"):
            # The party's first training step is measured; FLOPs per step do not change after it.
            with FlopCounterMode(display=False) as counter:
                handler(op, step, phase)
            self._flops += counter.get_total_flops()
            if op.action == "update":
                self.flops_per_step = self._flops
            return
        t0 = time.perf_counter()
        handler(op, step, phase)
        if op.action not in ("send", "recv"):
            self.compute_seconds += time.perf_counter() - t0


    def _forward(self, op: Op, step: int, phase: str) -> None:
        st = self._st(step, op.micro)
        seg = self.segments[op.target]
        train = phase == "train"
        xs: list[torch.Tensor] = []
        raw: list[torch.Tensor] = []  # the raw input this segment's output depends on, at this party
        for key in seg.data_inputs:
            if key not in st.batch:
                raise DataError(f"party '{self.name}' has no data '{key}' for segment '{seg.name}' at step {step}")
            xs.append(st.batch[key])
            raw.append(st.batch[key].reshape(st.batch[key].shape[0], -1))
        for src in seg.segment_inputs:
            edge = edge_name(src, seg.name)
            if edge in st.received:
                x = st.received.pop(edge)
            elif src in st.outputs:
                x = st.outputs[src].detach()
                raw += st.raw.get(src, [])  # a local segment before this one: its raw input is this one's too
            else:
                continue  # an inactive input of a 'route' merge
            if train:
                x.requires_grad_(True)
                st.leaves[(seg.name, src)] = x
            xs.append(x)
        st.check_rows(self.name, step, xs[0].shape[0], f"segment '{seg.name}'")
        with torch.set_grad_enabled(train):
            out = self.modules[seg.name](merge_inputs(xs, seg.merge))
            for defense in seg.defenses:  # what leaves is the defended cut (noise, clipping), in every phase
                out = defense.activation(out, train=train)
        st.outputs[seg.name] = out
        if raw:
            st.raw[seg.name] = raw
            # dCor of every cut that leaves a site, on validation data, whether a defense is on or not.
            if phase == "eval" and seg.name in self._cut_sources and out.shape[0] > 1:
                self.eval_dcor[seg.name].append(float(distance_correlation(joined(raw), out.detach())))

    def _send(self, op: Op, step: int, phase: str) -> None:
        st = self._st(step, op.micro)
        tensor: torch.Tensor
        if op.kind is Kind.ACTIVATION:
            edge = self.plan.edges[op.target]
            tensor, dst = st.outputs[edge.src], edge.dst_party
        elif op.kind is Kind.GRADIENT:
            edge = self.plan.edges[op.target]
            leaf = st.leaves[(edge.dst, edge.src)]
            tensor = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            for defense in self.segments[edge.dst].defenses:  # label defenses, at the labels' site
                tensor = defense.label_gradient(tensor, self._defended_labels(st, edge.dst))
            dst = edge.src_party
        elif op.kind is Kind.LABEL:
            flow = self.plan.label_flows[op.target]
            tensor, dst = self._labels(st, flow.label, step), flow.dst
        elif op.kind is Kind.PREDICTION:
            pred = self.plan.prediction_flows[op.target]
            tensor, dst = st.predictions[pred.task], pred.dst
        elif op.kind is Kind.FINGERPRINT:
            if FINGERPRINT_KEY not in st.batch:
                raise DataError(f"site '{self.name}' has no row fingerprint for step {step}",
                                hint="vertical sites need data whose rows have IDs (BatchSource.row_ids)")
            tensor, dst = st.batch[FINGERPRINT_KEY], self.plan.fingerprint_flows[op.target][1]
        else:
            flow_w = self.plan.weights_flows[op.target]
            mine = self.replicas[op.group]
            tensor = flat_state(self.modules[mine]) if mine else self._averaged[op.group]
            dst = flow_w.dst
        assert op.kind is not None  # a send op always names what it sends
        self.wire.send(Message(step, op.target, op.kind, self.name, dst, tensor,
                               "sync" if op.kind is Kind.WEIGHTS else phase, op.micro))

    def _recv(self, op: Op, step: int, phase: str) -> None:
        st = self._st(step, op.micro)
        if op.kind is Kind.WEIGHTS:
            flow = self.plan.weights_flows[op.target]
            vec = self.wire.recv(self.plan.expect(op, step, phase))
            mine = self.replicas[op.group]
            if mine:
                load_flat_state(self.modules[mine], vec)
            else:
                self._weights_in[op.group][flow.src] = vec
            return
        if op.kind is Kind.FINGERPRINT:
            digest = self.wire.recv(self.plan.expect(op, step, phase))
            st.fingerprints[self.plan.fingerprint_flows[op.target][0]] = bytes(digest.tolist()).hex()
            return
        exact = None
        if op.kind is Kind.GRADIENT:
            exact = tuple(st.outputs[self.plan.edges[op.target].src].shape)
        tensor = self.wire.recv(self.plan.expect(op, step, phase, exact))
        if self.device.type != "cpu" and op.kind is not Kind.PREDICTION:
            tensor = tensor.to(self.device, non_blocking=True)
        if op.kind is Kind.ACTIVATION:
            edge = self.plan.edges[op.target]
            st.check_rows(self.name, step, tensor.shape[0], f"edge '{edge.name}' from '{edge.src_party}'")
            st.received[op.target] = tensor
            if phase == "train":
                self.rows_seen[edge.src_party] += int(tensor.shape[0])
        elif op.kind is Kind.GRADIENT:
            src = self.plan.edges[op.target].src
            st.out_grads[src] = st.out_grads[src] + tensor if src in st.out_grads else tensor
        elif op.kind is Kind.PREDICTION:
            pred = self.plan.prediction_flows[op.target]
            self.predictions[pred.task].append(tensor)
        else:
            label = self.plan.label_flows[op.target]
            st.check_rows(self.name, step, tensor.shape[0], f"labels '{label.label}' from '{label.src}'")
            st.batch[label.label] = tensor

    def _loss(self, op: Op, step: int, phase: str) -> None:
        st = self._st(step, op.micro)
        task = self.plan.tasks[op.target]
        pred = st.outputs[task.head]
        target = self._labels(st, task.label, step)
        if phase == "train":
            loss = task_loss(task.loss, pred, target)
            # A micro-batch's mean loss counts for its share of the step's rows: the gradients sum to the plain
            # step's (the mean over the whole batch).
            share = pred.shape[0] / st.batch_rows if st.batch_rows else 1.0
            st.losses[task.head].append(task.weight * share * loss)
            self.train_loss[task.name].append((float(loss.detach()), int(pred.shape[0])))
        else:
            preds, targets = self.eval_preds[task.name]
            preds.append(pred.detach().cpu())
            targets.append(target.detach().cpu())

    def _predict(self, op: Op, step: int, phase: str) -> None:
        """The head's outputs as probabilities (bce, ce) or values (mse), kept here or sent to the labels' site."""
        task = self.plan.tasks[op.target]
        out = self._state[step].outputs[task.head].detach().cpu()
        prob = torch.sigmoid(out.reshape(-1)) if task.loss == "bce" else out.softmax(1) if task.loss == "ce" else out
        if self.name in self.plan.label_owners(task.label):
            self.predictions[task.name].append(prob)
        else:
            self._state[step].predictions[task.name] = prob.contiguous()

    def _backward(self, op: Op, step: int, phase: str) -> None:
        st = self._st(step, op.micro)
        seg = self.segments[op.target]
        out = st.outputs[seg.name]
        grad = st.out_grads.get(seg.name)
        for consumer in self.plan.consumers[seg.name]:  # local consumers leave their grad on the leaf
            leaf = st.leaves.get((consumer, seg.name))
            if leaf is not None and self.plan.segments[consumer].party == self.name and leaf.grad is not None:
                grad = leaf.grad if grad is None else grad + leaf.grad
        raw = joined(st.raw[seg.name]) if seg.name in st.raw else None
        roots: list[torch.Tensor] = []
        grads: list[torch.Tensor | None] = []
        if grad is not None:
            for defense in seg.defenses:  # NoPeek adds its gradient to the one that came back
                grad = defense.cut_gradient(raw, out, grad)
            roots.append(out)
            grads.append(grad)
        roots += st.losses.get(seg.name, [])
        share = out.shape[0] / st.batch_rows if st.batch_rows else 1.0
        for defense in seg.defenses:
            term = defense.loss(raw, out) if raw is not None else None
            if term is not None:  # a micro-batch carries its share of the step's penalty
                roots.append(share * term)
        grads += [None] * (len(roots) - len(grads))
        if roots and out.requires_grad:
            torch.autograd.backward(roots, grads)

    def _update(self, op: Op, step: int, phase: str) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self._state.pop(step, None)

    def _check(self, op: Op, step: int, phase: str) -> None:
        """Every site's batch must be the same patients in the same order."""
        check_fingerprints(self._state[step].fingerprints, step=step)

    def _average(self, op: Op, step: int, phase: str) -> None:
        """FedAvg of the replicas' weights, weighted by the rows each site trained on in this round."""
        vectors = self._weights_in.pop(op.group)
        weights = torch.tensor([float(max(self.rows_seen.get(p, 0), 1)) for p in vectors])
        stacked = torch.stack(list(vectors.values()))
        self._averaged[op.group] = (stacked * (weights / weights.sum()).unsqueeze(1)).sum(0)
        self._round_averaged = True

    def cut_outputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """What this party would send for a batch of its own rows: {segment: defended output} of every segment
        whose output leaves the party, computed by the same forward as an evaluation step (no message moves).

        For attacks that ask what a cut reveals about inputs the other party never saw (``medsplit.privacy``).
        """
        step = -1  # a step number no schedule uses
        kept = {k: list(v) for k, v in self.eval_dcor.items()}  # this is not an evaluation of the run
        self._begin(step, "eval", batch)
        try:
            for name in self.plan.order:
                seg = self.segments.get(name)
                if seg is not None and all(i in self._state[step].outputs for i in seg.segment_inputs):
                    self._forward(Op("forward", self.name, name), step, "eval")
            outputs = self._state[step].outputs
            return {n: outputs[n].detach() for n in outputs if n in self._cut_sources}
        finally:
            self.eval_dcor = defaultdict(list, kept)
            self._finish(step, "eval")


    def _labels(self, st: StepState, label: str, step: int) -> torch.Tensor:
        if label not in st.batch:
            raise DataError(f"party '{self.name}' has no labels '{label}' at step {step}",
                            hint="the labels' owner must provide the label column in its data")
        return st.batch[label]

    def _defended_labels(self, st: StepState, segment: str) -> torch.Tensor | None:
        """The labels of the one task whose head is ``segment`` or after it at this party (for label defenses)."""
        if segment not in self._task_labels:
            below, todo = set(), [segment]
            while todo:
                s = todo.pop()
                below.add(s)
                todo += [c for c in self.plan.consumers[s] if c in self.segments and c not in below]
            self._task_labels[segment] = sorted({t.label for t in self.plan.tasks.values() if t.head in below})
        labels = self._task_labels[segment]
        return st.batch.get(labels[0]) if len(labels) == 1 else None


    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this party: segments, optimizer, and the epoch's running numbers."""
        return {"modules": {n: m.state_dict() for n, m in self.modules.items()},
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else {},
                "train_loss": {t: [list(x) for x in v] for t, v in self.train_loss.items()},
                "rows_seen": dict(self.rows_seen),
                "flops_per_step": -1 if self.flops_per_step is None else int(self.flops_per_step),
                "compute_seconds": float(self.compute_seconds)}

    def load_state(self, state: dict[str, Any]) -> None:
        for name, sd in state["modules"].items():
            self.modules[name].load_state_dict(sd)
        if self.optimizer is not None and state["optimizer"]:
            self.optimizer.load_state_dict(state["optimizer"])
        self.train_loss = defaultdict(list, {t: [(float(a), int(b)) for a, b in v]
                                             for t, v in state["train_loss"].items()})
        self.rows_seen = defaultdict(int, state["rows_seen"])
        self.flops_per_step = None if state["flops_per_step"] < 0 else state["flops_per_step"]
        self._flops = 0
        self.compute_seconds = state["compute_seconds"]
        self._state.clear()


    def latest_losses(self) -> dict[str, float]:
        """The last training loss of each task this party computes (for progress lines)."""
        return {t: v[-1][0] for t, v in self.train_loss.items() if v}

    def pop_train_loss(self) -> dict[str, tuple[float, int]]:
        """{task: (mean loss, rows)} since the last call."""
        out = {t: (sum(loss * n for loss, n in v) / max(sum(n for _, n in v), 1), sum(n for _, n in v))
               for t, v in self.train_loss.items() if v}
        self.train_loss.clear()
        return out

    def pop_eval(self) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """({task: metrics}, {segment: mean dCor(raw, cut)}) over the evaluation just run."""
        metrics = {t: task_metrics(self.plan.tasks[t].loss, p, y) for t, (p, y) in self.eval_preds.items() if p}
        dcor = {s: sum(v) / len(v) for s, v in self.eval_dcor.items() if v}
        self.eval_preds.clear()
        self.eval_dcor.clear()
        return metrics, dcor

    def pop_predictions(self) -> dict[str, torch.Tensor]:
        """{task: outputs} this party holds, in the order of the units run, since the last call."""
        out = {t: torch.cat(parts) for t, parts in self.predictions.items() if parts}
        self.predictions.clear()
        return out
