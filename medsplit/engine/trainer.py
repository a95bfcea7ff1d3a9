"""SplitTrainer: every party of a topology in this process, over any transport that can hold them all."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Generator, Mapping
from typing import Any, Literal

import torch

from ..data import SiteData, SiteHolding
from ..errors import ConfigError, DataError
from ..plan.compile import compile_topology
from ..plan.plan import Op, Plan
from ..plan.schedule import Schedule, UnitSpec
from ..threads import run_in_threads
from ..topology.model import Topology
from ..transport import Transport, in_process_transport
from ..wire import Meter, Wire
from .checks import check_site_data
from .loop import EpochLoop, LoopHooks, Position
from .party import OptimizerFactory, PartyRunner, default_optimizer
from .report import EpochRecord, merge_reports, party_report, summarize
from .units import Unit, load_batch

__all__ = ["SplitTrainer", "EXECUTORS"]

EXECUTORS = ("sequential", "threaded")
StepCallback = Callable[[int, dict[str, float]], None]


class SplitTrainer:
    """Trains a topology with every party in this process, over a transport (``"local"`` by default).

    ``transport`` is a Transport or the name of a registered transport that can hold every party in one
    process (``medsplit.transport.TRANSPORTS``): ``"local"`` queues, or ``"gloo"``, real sockets between the
    parties. ``executor="sequential"`` runs the global op list in one thread; ``"threaded"`` gives each party
    its own thread, so sites compute concurrently and only wait on their own messages, as separate processes
    would. Both produce identical numbers, because each party executes its ops in the same order.

    ``micro_batches`` > 1 pipelines each training step (``Plan.step_ops``): with the threaded executor, or
    parties in processes, a site computes its next micro-batch while the last one crosses and the server
    works on it. The segments' ``Party.device`` places each party's segments (cpu, cuda); tensors cross
    between parties as CPU bytes. The topology's ``codecs`` encode cut tensors on the wire.

    Concurrent sites and the server: each message names its step; a party keeps state per step and
    executes a step's forward, backward and update before the next step's ops (serialised steps). With
    SplitFed the server therefore processes the sites' steps one after another in a fixed order, while
    the sites compute their own segments in parallel: a server segment is never updated between one
    site's forward and backward.
    """

    def __init__(self, topology: Topology, data: Mapping[str, SiteData], *, transport: Transport | str = "local",
                 optimizer: OptimizerFactory | Mapping[str, OptimizerFactory] = default_optimizer,
                 batch_size: int = 32, seed: int = 0, executor: Literal["sequential", "threaded"] = "sequential",
                 timeout: float = 60.0, shuffle: bool = True, meter: Meter | None = None,
                 fingerprint_key: bytes | None = None, require_labels: bool = True, micro_batches: int = 1) -> None:
        if executor not in EXECUTORS:
            raise ConfigError(f"unknown executor '{executor}'", hint=f"use one of: {', '.join(EXECUTORS)}")
        self.plan: Plan = compile_topology(topology)
        self.topology = topology
        self.data = dict(data)
        self.batch_size = batch_size
        self.seed = seed
        self.executor = executor
        self.require_labels = require_labels
        # Shared by the data sites only (in a deployment, agreed during alignment); the server never has it.
        self.fingerprint_key = fingerprint_key or secrets.token_bytes(32)
        self._check_data()
        self.transport = in_process_transport(transport, self.plan, timeout=timeout) \
            if isinstance(transport, str) else transport
        self.meter = meter or Meter()
        self.wire = Wire(self.transport, self.meter, self.plan.allowed(), timeout=timeout, codecs=self.plan.codecs)
        self.runners = {p.name: PartyRunner(p.name, self.plan, self.wire,
                                            optimizer[p.name] if isinstance(optimizer, Mapping) else optimizer)
                        for p in topology.parties}
        rows = {s: (len(self.data[s].train), len(self.data[s].val)) for s in topology.sites}
        self.schedule = Schedule(self.plan, rows, batch_size, seed, shuffle, micro_batches=micro_batches)
        self.history: list[EpochRecord] = []
        self._hooks = _TrainerHooks(self)
        self.loop = EpochLoop(self.schedule, self._execute, self._hooks)
        self.position: Position = self.loop.start()

    # --- data checks ---------------------------------------------------------------------------------

    def _check_data(self) -> None:
        for site in self.topology.sites:
            party = self.plan.parties[site]
            if site not in self.data:
                raise DataError(f"site '{site}' has no data", hint="pass SiteData(train=..., val=...) for every site")
            d = self.data[site]
            for split in ("train", "val"):
                if len(getattr(d, split)) == 0:
                    raise DataError(f"site '{site}' has no {split} rows",
                                    hint="every site needs training and validation rows; check its data report")
            sample = d.val.batch([0])  # not train: drawing a training sample would advance its augmentation
            check_site_data(self.plan, site, SiteHolding.of_batch(sample, party.labels),
                            require_labels=self.require_labels)
        if self.topology.schedule == "joint" and len(self.topology.sites) > 1:
            for split in ("train", "val"):
                sizes = {s: len(getattr(self.data[s], split)) for s in self.topology.sites}
                if len(set(sizes.values())) > 1:
                    raise DataError(f"sites in a joint topology must hold the same patients in the same order, "
                                    f"but their {split} rows differ: {sizes}",
                                    hint="align the sites on their common patients first (private set "
                                         "intersection) so that row k is the same patient everywhere")

    # --- executing units -----------------------------------------------------------------------------

    def _load(self, spec: UnitSpec) -> Unit:
        key = self.fingerprint_key if self.plan.fingerprint_checker is not None else None
        return Unit(spec, {site: load_batch(self.data[site], spec.step, spec.phase, idx, key)
                           for site, idx in spec.rows.items()})

    def _execute(self, specs: list[UnitSpec]) -> None:
        units = [self._load(spec) for spec in specs]
        if self.executor == "sequential":
            for unit in units:
                self._lockstep(unit)
            return
        parties = list(dict.fromkeys(p for u in units for p in u.spec.parties))

        def work(party: str) -> None:
            runner = self.runners[party]
            for unit in units:
                if party in unit.spec.parties:
                    runner.run_unit(unit)

        # A failing party wakes every party waiting on it, instead of letting them time out.
        run_in_threads(work, parties,
                       on_error=lambda party, exc: self.transport.close(f"party '{party}' failed: {exc}"))

    def _lockstep(self, unit: Unit) -> None:
        """Every party of the unit in this thread, one op at a time in the order of the global op list."""
        running: dict[str, Generator[Op, None, None]] = {p: self.runners[p].unit_ops(unit) for p in unit.spec.parties}
        try:
            for op in unit.spec.ops:
                next(running[op.party])
            for it in running.values():
                next(it, None)  # each party finishes its unit
        finally:
            for it in running.values():
                it.close()

    # --- public API ----------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """The number of the last unit run: training steps, evaluation batches and weight syncs."""
        return self.schedule.step

    @property
    def epoch(self) -> int:
        return self.position.epoch

    @property
    def train_steps(self) -> int:
        return self.position.train_steps

    def steps_per_epoch(self) -> int:
        """Training steps in one epoch (each site's batches, or the aligned batches of a joint topology)."""
        return self.schedule.steps_per_epoch()

    def train_epoch(self, on_step: StepCallback | None = None) -> dict[str, float]:
        """One pass over every site's training rows. Returns the mean train loss per task."""
        self._hooks.on_step = on_step
        self.loop.train_epoch(self.position)
        self.position.next_epoch(self.schedule.step)
        return merge_reports(self.epoch, self._reports(), self.train_steps, 0.0).train_loss

    def evaluate(self) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """Validation metrics per task (pooled over heads, weighted by rows) and dCor per leaky cut."""
        self.loop.evaluate()
        record = merge_reports(self.epoch, self._reports(), self.train_steps, 0.0)
        return record.metrics, record.dcor

    def predict_by_party(self) -> dict[str, dict[str, torch.Tensor]]:
        """Forward every validation row (no labels needed): {party: {task: outputs}} at each party that owns
        a task's labels (in a deployment the outputs are written there), each in the schedule's row order."""
        self.loop.evaluate("predict")
        out = {p: r.pop_predictions() for p, r in self.runners.items()}
        return {p: preds for p, preds in out.items() if preds}

    def predict(self) -> dict[str, torch.Tensor]:
        """{task: outputs} for every validation row, in the schedule's row order (sites in turn)."""
        by_party = self.predict_by_party()
        return {t.name: torch.cat([by_party[p][t.name] for p in self.plan.parties
                                   if t.name in by_party.get(p, {})]) for t in self.topology.tasks}

    def fit(self, epochs: int, *, on_epoch: Callable[[EpochRecord], None] | None = None,
            on_step: StepCallback | None = None) -> list[EpochRecord]:
        """Train ``epochs`` more epochs, evaluating after each. History is kept even if a step fails."""
        self._hooks.on_step, self._hooks.on_epoch = on_step, on_epoch
        self.position.history = self.history
        self.loop.run(self.epoch + epochs, self.position)
        return self.history

    @property
    def reports(self) -> dict[str, dict[str, Any]]:
        """Every party's report at the last epoch's end (what the run store records for it)."""
        return self._hooks.last_reports or {}

    def _reports(self) -> dict[str, dict[str, Any]]:
        return {p: party_report(r) for p, r in self.runners.items()}

    def flops_per_step(self) -> dict[str, int]:
        """FLOPs of each party's segments (forward, backward, losses, defenses) in its first full step."""
        return {p: int(r.flops_per_step or 0) for p, r in self.runners.items()}

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every segment's parameters, by segment name (for checkpoints and equivalence checks)."""
        return {name: seg.module.state_dict() for name, seg in self.plan.segments.items() if seg.module is not None}

    def summary(self, seconds: float = 0.0) -> dict[str, Any]:
        """The run's numbers, as written by ``medsplit demo --json``."""
        return summarize(self.history, self._hooks.last_reports or self._reports(), self.train_steps, seconds)


class _TrainerHooks(LoopHooks):
    """In-process hooks: every party's report is merged here; callbacks for progress bars and epoch lines."""

    def __init__(self, trainer: SplitTrainer) -> None:
        self.trainer = trainer
        self.on_step: StepCallback | None = None
        self.on_epoch: Callable[[EpochRecord], None] | None = None
        self.last_reports: dict[str, dict[str, Any]] | None = None

    def progress(self, epoch: int, done: int, total: int, steps: int) -> None:
        if self.on_step is not None:
            losses: dict[str, float] = {}
            for runner in self.trainer.runners.values():
                losses.update(runner.latest_losses())
            self.on_step(steps, losses)

    def epoch_end(self, epoch: int, train_steps: int, seconds: float) -> EpochRecord:
        self.last_reports = self.trainer._reports()
        record = merge_reports(epoch, self.last_reports, train_steps, seconds)
        if self.on_epoch is not None:
            self.on_epoch(record)
        return record
