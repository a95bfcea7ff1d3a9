"""Training an experiment with every party in this process, and reporting it (console, run store, JSON)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from medsplit.config import Experiment
from medsplit.engine import EpochRecord, SplitTrainer, format_epoch
from medsplit.errors import ConfigError, DataError
from medsplit.runstore import RunStore
from medsplit.runtime.resume import PartyCheckpoints
from medsplit.wire import Meter

from .cohort import Cohort, open_sites

__all__ = ["train_and_report", "run_in_process", "print_totals", "save_final_checkpoints"]


def train_and_report(trainer: SplitTrainer, *, epochs: int, info: dict[str, Any], run_dir: str | Path | None = None,
                     progress: bool = True, out: TextIO | None = None) -> dict[str, Any]:
    """Fit, printing one line per epoch and a progress bar; record the run store; return the summary.

    The summary's keys are a contract with users' scripts (``--json``): preset, transport, seed, epochs,
    metrics, bytes, flops_per_step, audit, seconds, and more.
    """
    out = out or sys.stdout
    print(trainer.plan.describe(), file=out)
    store = RunStore(run_dir) if run_dir else None
    if store is not None:
        store.set_info(**info, status="running", started=time.time(), epochs=epochs,
                       parties=[p.name for p in trainer.topology.parties], topology=trainer.plan.describe())
        for party in trainer.topology.parties:
            store.log_event(party.name, "training")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=trainer.steps_per_epoch() * epochs, unit="step", file=sys.stderr, dynamic_ncols=True,
                   leave=False)

    def on_step(n: int, losses: dict[str, float]) -> None:
        if bar is not None:
            bar.update(n)
            bar.set_postfix({t: f"{v:.3f}" for t, v in losses.items()})

    def on_epoch(rec: EpochRecord) -> None:
        if store is not None:
            store.record_epoch(rec, trainer.reports)
        line = format_epoch(rec, epochs)
        if bar is not None:
            bar.write(line, file=out)
        else:
            print(line, file=out)

    t0 = time.perf_counter()
    try:
        trainer.fit(epochs, on_epoch=on_epoch, on_step=on_step)
    except BaseException as exc:
        if store is not None:
            store.set_info(status="failed", error=str(exc), ended=time.time())
            store.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    if store is not None:
        for party in trainer.topology.parties:
            store.log_event(party.name, "finished")
        store.set_info(status="completed", ended=time.time())
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
    """Every site of ``exp`` opened from its YAML on this machine, its shapes checked against the experiment."""
    missing = [s.name for s in exp.sites if s.config is None]
    if missing:
        raise ConfigError(f"experiment '{exp.name}': sites {missing} have no 'config:' (their site YAML)",
                            hint="running every party on this machine needs each site's YAML and data")
    topology = exp.build_topology()
    cohort = open_sites({s.party: s.config for s in exp.sites if s.config is not None}, topology, meter=meter,
                        context=exp.alignment_context())
    for s in exp.sites:
        for key, shape in s.shapes.items():
            got = cohort.shapes(s.party).get(key)
            if got is not None and tuple(got) != tuple(shape):
                raise DataError(f"site '{s.name}' data '{key}' has shape {tuple(got)}, but the experiment "
                                f"declares {tuple(shape)}", hint="make the experiment's shape match the "
                                                                 "site's pipeline (spatial_size, features)")
    return cohort, topology


def run_in_process(exp: Experiment, *, transport: str = "local", run_dir: str | Path | None = None,
                   executor: str = "sequential", progress: bool = True, out: TextIO | None = None) -> dict[str, Any]:
    """Every party in this process: each site's data opened from its own YAML, vertical sites aligned by PSI."""
    out = out or sys.stdout
    meter = Meter()
    print(f"data: experiment {exp.name} ({exp.path})", file=out)
    cohort, topology = open_experiment(exp, meter)
    data = cohort.engine_data(topology)
    _print_cohort(cohort, data, out)
    lr = exp.training.lr
    trainer = SplitTrainer(topology, data, transport=transport, optimizer=lambda params: torch.optim.Adam(params, lr=lr),
                           batch_size=exp.training.batch_size, seed=exp.seed, executor=executor,  # type: ignore[arg-type]
                           timeout=exp.training.timeout, meter=meter, micro_batches=exp.training.micro_batches)
    info = {"name": exp.name, "preset": exp.topology.preset, "transport": transport, "seed": exp.seed,
            "nopeek": exp.topology.nopeek, "executor": executor, "experiment": str(exp.path)}
    summary = train_and_report(trainer, epochs=exp.training.epochs, info=info, run_dir=run_dir, progress=progress,
                               out=out)
    if run_dir:
        save_final_checkpoints(trainer, Path(run_dir), exp.digest())
    return summary


def save_final_checkpoints(trainer: SplitTrainer, run_dir: Path, digest: str) -> None:
    """Each party's trained state, as its node would save it, so that `medsplit predict` can use the model."""
    for party, runner in trainer.runners.items():
        PartyCheckpoints(run_dir, party, digest).save(trainer.step, runner.state(), trainer.position)
