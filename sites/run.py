"""Training an experiment with every party in this process, and reporting it (console, run store, JSON)."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import torch

from medsplit.config import Experiment
from medsplit.engine import EpochRecord, SplitTrainer, format_epoch
from medsplit.errors import ConfigError, DataError
from medsplit.runstore import RunStore, StepLog, declared_flows, stop_reason
from medsplit.runtime.resume import PartyCheckpoints
from medsplit.wire import Meter

from .cohort import Cohort, open_sites

__all__ = ["train_and_report", "run_in_process", "print_totals", "save_checkpoints", "resume_trainer"]


def train_and_report(trainer: SplitTrainer, *, epochs: int, info: dict[str, Any], run_dir: str | Path | None = None,
                     progress: bool = True, out: TextIO | None = None,
                     checkpoint: Callable[[EpochRecord], None] | None = None, resumed: bool = False) -> dict[str, Any]:
    """Fit until ``epochs`` epochs are done, printing one line per epoch and a progress bar; record the run store
    (lifecycle, live steps, epochs); return the summary. ``checkpoint`` runs after each epoch is recorded.

    The summary's keys are a contract with users' scripts (``--json``): preset, transport, seed, epochs,
    metrics, bytes, flops_per_step, audit, seconds, and more.
    """
    out = out or sys.stdout
    print(trainer.plan.describe(), file=out)
    store = RunStore(run_dir) if run_dir else None
    parties = [p.name for p in trainer.topology.parties]
    total = trainer.steps_per_epoch()
    if store is not None:
        facts = {**info, "epochs": epochs, "parties": parties, "topology": trainer.plan.describe()}
        if resumed:
            facts.update(resumed_at=time.time(), resumes=int(store.info().get("resumes") or 0) + 1)
        else:
            facts["started"] = time.time()
        store.set_info(**facts)
        store.set_plan(declared_flows(trainer.plan, trainer.batch_size), trainer.batch_size, total)
        store.set_status("running", f"resumed at epoch {trainer.epoch + 1}" if resumed else "")
        for party in parties:
            store.log_event(party, "resumed" if resumed else "training")
    steps = StepLog(store) if store is not None else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total * epochs, initial=total * trainer.epoch, unit="step", file=sys.stderr,
                   dynamic_ncols=True, leave=False)

    def on_step(n: int, losses: dict[str, float]) -> None:
        if bar is not None:
            bar.update(n)
            bar.set_postfix({t: f"{v:.3f}" for t, v in losses.items()})
        pos = trainer.position
        if steps is not None and steps.due(force=pos.in_epoch >= total):
            steps.write(pos.epoch + 1, pos.in_epoch, total, pos.train_steps, losses, trainer.meter.flows(), parties)

    def on_epoch(rec: EpochRecord) -> None:
        if store is not None:
            store.record_epoch(rec, trainer.reports)
        if steps is not None:  # after validation: the live transfers include the epoch's evaluation too
            losses = {t: v for r in trainer.runners.values() for t, v in r.latest_losses().items()}
            steps.write(rec.epoch, total, total, trainer.train_steps, losses, trainer.meter.flows(), parties)
        if checkpoint is not None:
            checkpoint(rec)
        line = format_epoch(rec, epochs)
        if bar is not None:
            bar.write(line, file=out)
        else:
            print(line, file=out)

    t0 = time.perf_counter()
    try:
        trainer.fit(epochs - trainer.epoch, on_epoch=on_epoch, on_step=on_step)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`medsplit run` turns it into this): stopped, not failed
        if store is not None:
            store.set_status("stopped", stop_reason(exc), unless_final=True)
            store.close()
        raise
    except BaseException as exc:
        if store is not None:
            store.set_info(error=str(exc))
            store.set_status("failed", str(exc)[:2000])
            store.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    if store is not None:
        for party in parties:
            store.log_event(party, "finished")
        store.set_status("completed")
        store.close()
    summary = {**info, "epochs": epochs, "status": "completed", **trainer.summary(time.perf_counter() - t0)}
    print_totals(summary, out)
    return summary


def print_totals(summary: dict[str, Any], out: TextIO) -> None:
    print("bytes per party (sent / received) and FLOPs per training step:", file=out)
    for party, b in summary["bytes"].items():
        flops = summary["flops_per_step"].get(party, 0)
        print(f"  {party:<14} {b['sent'] / 1e6:9.2f} MB / {b['received'] / 1e6:9.2f} MB   "
              f"{flops / 1e6:10.1f} MFLOP", file=out)
    kinds = sorted({r["kind"] for r in summary["audit"]})
    print(f"audit: {sum(r['count'] for r in summary['audit'])} tensors crossed a party boundary "
          f"(kinds: {', '.join(kinds)})", file=out)


def _print_cohort(cohort: Cohort, data: dict[str, Any], out: TextIO) -> None:
    for party, report in cohort.reports.items():
        d = data[party]
        print(f"  {party:<12} {report.found} found, {report.loaded} loaded, {len(report.rejected)} rejected; "
              f"{len(d.train)} train / {len(d.val)} val patients; shapes {cohort.shapes(party)}", file=out)
    if cohort.aligned is not None:
        print(f"  aligned by private set intersection: {cohort.aligned} common patients", file=out)


def open_experiment(exp: Experiment, meter: Meter | None = None) -> tuple[Cohort, Any]:
    """Every site of ``exp`` opened from its YAML on this machine, its data checked against the experiment."""
    missing = [s.name for s in exp.sites if s.config is None]
    if missing:
        raise ConfigError(f"experiment '{exp.name}': sites {missing} have no 'config:' (their site YAML)",
                            hint="running every party on this machine needs each site's YAML and data")
    topology = exp.build_topology()
    # Each site's data is checked as its node checks it (medsplit.engine.checks): the same words in every mode.
    cohort = open_sites({s.party: s.config for s in exp.sites if s.config is not None}, topology, meter=meter,
                        context=exp.alignment_context(), declared=exp.declared())
    return cohort, topology


def run_in_process(exp: Experiment, *, transport: str = "local", run_dir: str | Path | None = None,
                   executor: str = "sequential", progress: bool = True, out: TextIO | None = None,
                   resume: bool = False) -> dict[str, Any]:
    """Every party in this process: each site's data opened from its own YAML, vertical sites aligned by PSI.

    With ``run_dir`` every party's state is saved at each epoch's end; ``resume`` continues from the last
    epoch end that every party saved (a stopped run).
    """
    out = out or sys.stdout
    meter = Meter()
    print(f"data: experiment {exp.name} ({exp.path})", file=out)
    cohort, topology = open_experiment(exp, meter)
    data = cohort.engine_data(topology)
    _print_cohort(cohort, data, out)
    lr = exp.training.lr
    trainer = SplitTrainer(topology, data, transport=transport,
                           optimizer=lambda params: torch.optim.Adam(params, lr=lr),
                           batch_size=exp.training.batch_size, seed=exp.seed, executor=executor,  # type: ignore[arg-type]
                           timeout=exp.training.timeout, meter=meter, micro_batches=exp.training.micro_batches)
    info = {"name": exp.name, "preset": exp.topology.preset, "transport": transport, "seed": exp.seed,
            "nopeek": exp.topology.nopeek, "executor": executor, "experiment": str(exp.path)}
    checkpoint = None
    if run_dir:
        digest = exp.digest()
        if resume:
            epoch = resume_trainer(trainer, Path(run_dir), digest)
            print(f"resumed after epoch {epoch} from the checkpoints in {run_dir}", file=out)
        checkpoint = functools.partial(save_checkpoints, trainer, Path(run_dir), digest)
    elif resume:
        raise ConfigError("resuming needs the run's directory", hint="pass --run-dir DIR of the stopped run")
    # Each epoch's end is saved (the last one too): `medsplit predict` uses the last, a resumed run the newest.
    return train_and_report(trainer, epochs=exp.training.epochs, info=info, run_dir=run_dir, progress=progress,
                            out=out, checkpoint=checkpoint, resumed=resume)


def save_checkpoints(trainer: SplitTrainer, run_dir: Path, digest: str, record: EpochRecord | None = None
                           ) -> None:
    """Each party's trained state, as its node would save it, so that `medsplit predict` can use the model, and a
    stopped run can resume. ``record``: the epoch that just ended (its end is marked; resuming starts there)."""
    position = trainer.position
    if record is not None and record not in position.history:  # the loop appends it after the epoch's hooks
        position = replace(position, history=[*position.history, record])
    for party, runner in trainer.runners.items():
        ckpts = PartyCheckpoints(run_dir, party, digest)
        ckpts.save(trainer.step, runner.state(), position)
    if record is not None:
        ckpts.mark_epoch_end(trainer.step)


def resume_trainer(trainer: SplitTrainer, run_dir: Path, digest: str) -> int:
    """Load every party's state from the last epoch end they all saved; returns the epochs already done."""
    ckpts = {p: PartyCheckpoints(run_dir, p, digest) for p in trainer.runners}
    common = set.intersection(*(set(c.epoch_ends()) for c in ckpts.values()))
    if not common:
        raise DataError(f"no epoch's end that every party saved under {run_dir}, so there is nothing to resume from",
                        hint="start the run again without --resume (it stopped before its first epoch ended)")
    step = max(common)
    positions = []
    for party, runner in trainer.runners.items():
        state, position = ckpts[party].load(step)
        runner.load_state(state)
        positions.append(position)
    trainer.history = positions[0].history
    trainer.position = trainer.loop.resume(positions[0])
    return trainer.position.epoch
