"""`medsplit demo`: train a preset on synthetic patients and report metrics, bytes, FLOPs and the audit."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from .engine import EpochRecord, SplitTrainer
from .errors import MedsplitError
from .meter import Meter
from .runstore import RunStore, record_epoch
from .presets import PresetConfig, build_preset, preset_data
from .transport import make_transport

__all__ = ["DemoOptions", "run_demo", "write_json"]


@dataclass
class DemoOptions:
    preset: str = "vertical"
    transport: str = "local"
    epochs: int = 5
    seed: int = 0
    nopeek: float = 0.0
    sites: int = 3
    ushaped: bool = False
    merge: str = "concat"
    batch_size: int = 32
    lr: float = 1e-3
    patients: int = 600
    executor: str = "sequential"
    progress: bool = True
    data: str = "files"  # "files": a synthetic cohort of DICOM and EHR files; "memory": tensors made in memory
    workdir: str = "runs/demo-data"
    run_dir: str | None = None  # where to write the run store (run.sqlite) for the dashboard


def _format_epoch(rec: EpochRecord, epochs: int) -> str:
    parts = []
    for task, m in sorted(rec.metrics.items()):
        bits = [f"train_loss {rec.train_loss.get(task, float('nan')):.4f}", f"val_loss {m['val_loss']:.4f}"]
        bits += [f"{k} {m[k]:.4f}" for k in ("val_auc", "val_acc", "val_mse") if k in m]
        parts.append(f"{task}: " + ", ".join(bits))
    dcor = "".join(f"  dCor[{s}] {v:.3f}" for s, v in sorted(rec.dcor.items()))
    return f"epoch {rec.epoch}/{epochs}  " + " | ".join(parts) + dcor + f"  ({rec.seconds:.1f} s)"


def run_demo(opts: DemoOptions, out: TextIO | None = None) -> dict:
    """Train the preset and return the summary; raises MedsplitError with a clear message on bad input."""
    out = out or sys.stdout
    if opts.epochs < 1:
        raise MedsplitError(f"--epochs must be at least 1, got {opts.epochs}")
    if opts.nopeek < 0:
        raise MedsplitError(f"--nopeek must be >= 0, got {opts.nopeek}")
    if opts.data not in ("files", "memory"):
        raise MedsplitError(f"unknown data source '{opts.data}'", hint="use 'files' or 'memory'")
    if opts.patients < 10:
        raise MedsplitError(f"--patients must be at least 10, got {opts.patients}")
    meter = Meter()
    cfg = PresetConfig(sites=opts.sites, nopeek=opts.nopeek, ushaped=opts.ushaped, merge=opts.merge)
    build_preset(opts.preset, cfg)  # refuse a bad preset or option before writing any file
    if opts.data == "files":
        from data_adapters.cohort import cohort_for_preset

        cohort = cohort_for_preset(opts.preset, sites=opts.sites, patients=opts.patients, seed=opts.seed,
                                   root=opts.workdir, meter=meter)
        _print_cohort(cohort, out)
        shapes = {k: v for party in cohort.shapes.values() for k, v in party.items()}
        cfg.image_shape = shapes.get("image", cfg.image_shape)
        cfg.ehr_features = shapes.get("ehr", (cfg.ehr_features,))[0]
        torch.manual_seed(opts.seed)
        topology = build_preset(opts.preset, cfg)
        data = cohort.engine_data(topology)
    else:
        torch.manual_seed(opts.seed)
        topology = build_preset(opts.preset, cfg)
        data = preset_data(topology, cfg, seed=opts.seed, patients=int(opts.patients * 0.8))
    trainer = SplitTrainer(topology, data, transport=make_transport(opts.transport),
                           optimizer=lambda params: torch.optim.Adam(params, lr=opts.lr),
                           batch_size=opts.batch_size, seed=opts.seed, executor=opts.executor, meter=meter)
    print(trainer.plan.describe(), file=out)
    bar = None
    if opts.progress:
        from tqdm import tqdm

        bar = tqdm(total=trainer.steps_per_epoch() * opts.epochs, unit="step", file=sys.stderr,
                   dynamic_ncols=True, leave=False)

    def on_step(n: int, losses: dict[str, float]) -> None:
        if bar is not None:
            bar.update(n)
            bar.set_postfix({t: f"{v:.3f}" for t, v in losses.items()})

    store = None
    if opts.run_dir:
        store = RunStore(opts.run_dir)
        store.set_info(name=f"demo-{opts.preset}-seed{opts.seed}", preset=opts.preset, transport=opts.transport,
                       status="running", started=time.time(), epochs=opts.epochs, seed=opts.seed,
                       nopeek=opts.nopeek, parties=[p.name for p in topology.parties], topology=trainer.plan.describe())
        for party in topology.parties:
            store.log_event(party.name, "training")

    def on_epoch(rec: EpochRecord) -> None:
        if store is not None:
            record_epoch(store, trainer, rec)
        line = _format_epoch(rec, opts.epochs)
        if bar is not None:
            bar.write(line, file=out)
        else:
            print(line, file=out)

    t0 = time.perf_counter()
    try:
        trainer.fit(opts.epochs, on_epoch=on_epoch, on_step=on_step)
    except BaseException as exc:
        if store is not None:
            store.set_info(status="failed", error=str(exc), ended=time.time())
            store.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    if store is not None:
        for party in topology.parties:
            store.log_event(party.name, "finished")
        store.set_info(status="completed", ended=time.time())
        store.close()
    summary = {"preset": opts.preset, "transport": opts.transport, "seed": opts.seed, "epochs": opts.epochs,
               "nopeek": opts.nopeek, "executor": opts.executor, "data": opts.data, "status": "completed",
               "seconds": round(time.perf_counter() - t0, 3), **trainer.summary()}
    _print_totals(summary, out)
    return summary


def _print_cohort(cohort, out: TextIO) -> None:
    print(f"data: synthetic cohort in {cohort.root}", file=out)
    for party, report in cohort.reports.items():
        train, val = cohort.splits[party]
        print(f"  {party:<12} {report.found} found, {report.loaded} loaded, {len(report.rejected)} rejected; "
              f"{len(train)} train / {len(val)} val patients; shapes {cohort.shapes[party]}", file=out)
    if cohort.aligned is not None:
        print(f"  aligned by private set intersection: {cohort.aligned} common patients", file=out)


def _print_totals(summary: dict, out: TextIO) -> None:
    print("bytes per party (sent / received) and FLOPs per training step:", file=out)
    for party, b in summary["bytes"].items():
        flops = summary["flops_per_step"].get(party, 0)
        print(f"  {party:<14} {b['sent'] / 1e6:9.2f} MB / {b['received'] / 1e6:9.2f} MB   "
              f"{flops / 1e6:10.1f} MFLOP", file=out)
    kinds = sorted({r["kind"] for r in summary["audit"]})
    print(f"audit: {sum(r['count'] for r in summary['audit'])} tensors crossed a party boundary "
          f"(kinds: {', '.join(kinds)})", file=out)


def write_json(summary: dict, path: str | os.PathLike) -> None:
    """Write atomically (temp file, then rename) so a reader never sees half a summary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
