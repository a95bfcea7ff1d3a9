"""The in-process engine: one training loop for every topology, run sequentially or one thread per party."""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

import torch

from .data import SiteData
from .errors import DataError, MedsplitError
from .meter import Meter
from .fingerprint import batch_fingerprint
from .party import FINGERPRINT_KEY, OptimizerFactory, PartyRunner, default_optimizer
from .plan import Op, Plan, compile_topology
from .schedule import Schedule, UnitSpec
from .threads import run_in_threads
from .topology import Topology
from .transport import LocalTransport, Transport
from .wire import Wire

__all__ = ["SplitTrainer", "Unit", "EpochRecord", "merge_train_loss", "merge_eval"]


@dataclass
class Unit:
    """A scheduled unit with the batches of the sites that take part, loaded in this process."""

    spec: UnitSpec
    batches: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return self.spec.step

    @property
    def phase(self) -> str:
        return self.spec.phase

    @property
    def ops(self) -> tuple[Op, ...]:
        return self.spec.ops

    @property
    def parties(self) -> list[str]:
        return self.spec.parties


@dataclass
class EpochRecord:
    """What one epoch produced: mean train loss and validation metrics per task, dCor per leaky cut."""

    epoch: int
    train_loss: dict[str, float]
    metrics: dict[str, dict[str, float]]
    dcor: dict[str, float]
    seconds: float
    steps: int


class SplitTrainer:
    """Trains a topology with every party in this process, over a Transport (local by default).

    ``executor="sequential"`` runs the global op list in one thread; ``"threaded"`` gives each party its
    own thread, so sites compute concurrently and only wait on their own messages, as separate processes
    would. Both produce identical numbers, because each party executes its ops in the same order.

    Concurrent sites and the server: each message names its step; a party keeps state per step and
    executes a step's forward, backward and update before the next step's ops (serialised steps). With
    SplitFed the server therefore processes the sites' steps one after another in a fixed order, while
    the sites compute their own segments in parallel: a server segment is never updated between one
    site's forward and backward.
    """

    def __init__(self, topology: Topology, data: Mapping[str, SiteData], *, transport: Transport | None = None,
                 optimizer: OptimizerFactory | Mapping[str, OptimizerFactory] = default_optimizer,
                 batch_size: int = 32, seed: int = 0, executor: Literal["sequential", "threaded"] = "sequential",
                 timeout: float = 60.0, shuffle: bool = True, meter: Meter | None = None,
                 fingerprint_key: bytes | None = None, require_labels: bool = True) -> None:
        self.plan: Plan = compile_topology(topology)
        self.topology = topology
        self.data = dict(data)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        if executor not in ("sequential", "threaded"):
            raise MedsplitError(f"unknown executor '{executor}'", hint="use 'sequential' or 'threaded'")
        self.executor = executor
        self.require_labels = require_labels
        # Shared by the data sites only (in a deployment, agreed during alignment); the server never has it.
        self.fingerprint_key = fingerprint_key or secrets.token_bytes(32)
        self._check_data()
        self.transport = transport or LocalTransport()
        self.meter = meter or Meter()
        self.wire = Wire(self.transport, self.meter, self.plan.allowed(), timeout=timeout)
        factory = (lambda p: optimizer[p]) if isinstance(optimizer, Mapping) else (lambda p: optimizer)
        self.runners = {p.name: PartyRunner(p.name, self.plan, self.wire, factory(p.name))
                        for p in topology.parties}
        rows = {s: (len(self.data[s].train), len(self.data[s].val)) for s in topology.sites}
        self.schedule = Schedule(self.plan, rows, batch_size, seed, shuffle)
        self.train_steps = 0
        self.epoch = 0
        self.history: list[EpochRecord] = []
        self._run([self._load(u) for u in self.schedule.initial_sync()])

    # --- data checks ---------------------------------------------------------------------------------

    def _check_data(self) -> None:
        for site in self.topology.sites:
            party = self.plan.parties[site]
            if site not in self.data:
                raise DataError(f"site '{site}' has no data", hint="pass SiteData(train=..., val=...) for every site")
            d = self.data[site]
            for split in ("train", "val"):
                rows = len(getattr(d, split))
                if rows == 0:
                    raise DataError(f"site '{site}' has no {split} rows",
                                    hint="every site needs training and validation rows; check its data report")
            sample = d.val.batch([0])  # not train: drawing a training sample would advance its augmentation
            for key, shape in party.data.items():
                if key not in sample:
                    raise DataError(f"site '{site}' data lacks '{key}', which its party declares",
                                    hint=f"its data has keys {sorted(sample)}")
                if tuple(sample[key].shape[1:]) != tuple(shape):
                    raise DataError(f"site '{site}' data '{key}' has per-sample shape "
                                    f"{tuple(sample[key].shape[1:])}, but the topology declares {tuple(shape)}")
            for label in party.labels if self.require_labels else ():
                if label not in sample:
                    raise DataError(f"site '{site}' owns labels '{label}' but its data has no such column")
        if self.topology.schedule == "joint" and len(self.topology.sites) > 1:
            for split in ("train", "val"):
                sizes = {s: len(getattr(self.data[s], split)) for s in self.topology.sites}
                if len(set(sizes.values())) > 1:
                    raise DataError(f"sites in a joint topology must hold the same patients in the same order, "
                                    f"but their {split} rows differ: {sizes}",
                                    hint="align the sites on their common patients first (private set "
                                         "intersection) so that row k is the same patient everywhere")

    # --- executing units -----------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """The number of the last unit run: training steps, evaluation batches and weight syncs."""
        return self.schedule.step

    def _load(self, spec: UnitSpec) -> Unit:
        split = "val" if spec.phase in ("eval", "predict") else "train"
        batches = {}
        for site, idx in spec.rows.items():
            source = getattr(self.data[site], split)
            batch = source.batch(idx)
            if self.plan.fingerprint_checker is not None:
                digest = bytes.fromhex(batch_fingerprint(source.row_ids(idx), self.fingerprint_key))
                batch[FINGERPRINT_KEY] = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
            batches[site] = batch
        return Unit(spec, batches)

    def _run(self, units: list[Unit]) -> None:
        if self.executor == "sequential" or len(units) == 0:
            for unit in units:
                for p in unit.parties:
                    self.runners[p].begin(unit.step, unit.phase, unit.batches.get(p))
                for op in unit.ops:
                    self.runners[op.party].run(op, unit.step, unit.phase)
                for p in unit.parties:
                    self.runners[p].finish(unit.step)
            return
        parties = list(dict.fromkeys(p for u in units for p in u.parties))

        def work(party: str) -> None:
            runner = self.runners[party]
            for unit in units:
                if party not in unit.parties:
                    continue
                runner.begin(unit.step, unit.phase, unit.batches.get(party))
                for op in unit.ops:
                    if op.party == party:
                        runner.run(op, unit.step, unit.phase)
                runner.finish(unit.step)

        # A failing party wakes every party waiting on it, instead of letting them time out.
        run_in_threads(work, parties,
                       on_error=lambda party, exc: self.transport.close(f"party '{party}' failed: {exc}"))

    # --- public API ----------------------------------------------------------------------------------

    def steps_per_epoch(self) -> int:
        """Training steps in one epoch (each site's batches, or the aligned batches of a joint topology)."""
        return self.schedule.steps_per_epoch()

    def train_epoch(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        """One pass over every site's training rows. Returns the mean train loss per task."""
        for specs in self.schedule.train_epoch(self.epoch):
            group = [self._load(spec) for spec in specs]
            self._run(group)
            self.train_steps += sum(1 for u in group if u.phase == "train")
            if on_step and group[0].phase == "train":
                on_step(len(group), self._last_losses())
        for runner in self.runners.values():
            runner.end_round()
        self.epoch += 1
        return self._collect_train_loss()

    def _last_losses(self) -> dict[str, float]:
        out = {}
        for runner in self.runners.values():
            for task, values in runner.train_loss.items():
                if values:
                    out[task] = values[-1][0]
        return out

    def _collect_train_loss(self) -> dict[str, float]:
        return merge_train_loss([runner.pop_train_loss() for runner in self.runners.values()])

    def evaluate(self, split: str = "val") -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """Validation metrics per task (pooled over heads, weighted by rows) and dCor per leaky cut."""
        if split != "val":
            raise MedsplitError(f"cannot evaluate on split '{split}'", hint="evaluation runs on 'val'")
        for spec in self.schedule.eval_units():
            self._run([self._load(spec)])
        return merge_eval([runner.pop_eval() for runner in self.runners.values()])

    def predict(self) -> dict[str, torch.Tensor]:
        """Forward every validation row (no labels needed): {task: outputs}, in the schedule's row order.

        The outputs are gathered here from the head's party; in a deployment they stay at that party.
        """
        for spec in self.schedule.eval_units("predict"):
            self._run([self._load(spec)])
        out: dict[str, torch.Tensor] = {}
        for runner in self.runners.values():
            for task, parts in runner.predictions.items():
                out[task] = torch.cat(parts)
            runner.predictions.clear()
        return out

    def fit(self, epochs: int, *, on_epoch: Callable[[EpochRecord], None] | None = None,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> list[EpochRecord]:
        """Train ``epochs`` more epochs, evaluating after each. History is kept even if a step fails."""
        for _ in range(epochs):
            t0 = time.perf_counter()
            start = self.train_steps
            train_loss = self.train_epoch(on_step)
            metrics, dcor = self.evaluate()
            record = EpochRecord(self.epoch, train_loss, metrics, dcor, time.perf_counter() - t0,
                                 self.train_steps - start)
            self.history.append(record)
            if on_epoch:
                on_epoch(record)
        return self.history

    def flops_per_step(self) -> dict[str, int]:
        """FLOPs of each party's segments (forward, backward, losses, defenses) in its first full step."""
        return {p: int(r.flops_per_step or 0) for p, r in self.runners.items()}

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every segment's parameters, by segment name (for checkpoints and equivalence checks)."""
        return {name: seg.module.state_dict() for name, seg in self.plan.segments.items() if seg.module is not None}

    def summary(self) -> dict:
        """The run's numbers, as written by ``medsplit demo --json``."""
        last = self.history[-1] if self.history else None
        return {
            "metrics": {t: {k: _finite(v) for k, v in m.items()} for t, m in (last.metrics if last else {}).items()},
            "train_loss": {t: _finite(v) for t, v in (last.train_loss if last else {}).items()},
            "dcor": {s: _finite(v) for s, v in (last.dcor if last else {}).items()},
            "history": [
                {"epoch": r.epoch, "train_loss": r.train_loss, "metrics": r.metrics, "dcor": r.dcor,
                 "seconds": round(r.seconds, 3), "steps": r.steps} for r in self.history],
            "bytes": self.meter.bytes_by_party(),
            "flops_per_step": self.flops_per_step(),
            "compute_seconds": {p: round(r.compute_seconds, 3) for p, r in self.runners.items()},
            "audit": self.meter.audit(),
            "steps": self.train_steps,
        }


def merge_train_loss(per_party: list[dict[str, tuple[float, int]]]) -> dict[str, float]:
    """Row-weighted mean train loss per task over the parties that computed it."""
    sums: dict[str, list[float]] = {}
    for losses in per_party:
        for task, (loss, n) in losses.items():
            s = sums.setdefault(task, [0.0, 0])
            s[0] += loss * n
            s[1] += n
    return {t: s / max(n, 1) for t, (s, n) in sums.items()}


def merge_eval(per_party: list[tuple[dict[str, dict[str, float]], dict[str, float]]]
               ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Validation metrics per task pooled over the parties holding a head (row-weighted), and dCor per cut."""
    metrics: dict[str, dict[str, float]] = {}
    dcor: dict[str, float] = {}
    for m, d in per_party:
        dcor.update(d)
        for task, values in m.items():
            if task not in metrics:
                metrics[task] = dict(values)
                continue
            # A task whose heads sit at several sites (horizontal U-shaped): weight by rows.
            total = metrics[task]["n"] + values["n"]
            for k, v in values.items():
                if k != "n":
                    metrics[task][k] = (metrics[task][k] * metrics[task]["n"] + v * values["n"]) / total
            metrics[task]["n"] = total
    return metrics, dcor


def _finite(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v
