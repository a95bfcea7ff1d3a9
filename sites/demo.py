"""`medsplit demo`: train a preset on synthetic patients and report metrics, bytes, FLOPs and the audit."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from medsplit.config import load_experiment
from medsplit.engine import SplitTrainer
from medsplit.errors import ConfigError
from medsplit.synthetic import preset_data
from medsplit.topology import PresetConfig, build_preset, preset_spec

from .cohort import demo_experiment
from .launch import run_processes
from .run import run_in_process, train_and_report

__all__ = ["DemoOptions", "run_demo", "write_json"]


@dataclass
class DemoOptions:
    preset: str = "vertical"
    transport: str = "gloo"
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


def run_demo(opts: DemoOptions, out: TextIO | None = None) -> dict[str, Any]:
    """Train the preset and return the summary; raises MedsplitError with a clear message on bad input."""
    out = out or sys.stdout
    if opts.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {opts.epochs}", hint="train at least one epoch")
    if opts.nopeek < 0:
        raise ConfigError(f"--nopeek must be >= 0, got {opts.nopeek}", hint="use 0 to turn NoPeek off")
    if opts.data not in ("files", "memory"):
        raise ConfigError(f"unknown data source '{opts.data}'", hint="use 'files' or 'memory'")
    if opts.patients < 10:
        raise ConfigError(f"--patients must be at least 10, got {opts.patients}", hint="give 10 or more")
    if opts.data == "memory" and opts.transport != "local":
        raise ConfigError("--data memory keeps every party in this process",
                          hint="use --transport local with --data memory, or --data files for processes")
    knobs = _knobs(opts)
    cfg = PresetConfig(sites=opts.sites, nopeek=opts.nopeek, ushaped=opts.ushaped, merge=opts.merge)
    build_preset(opts.preset, cfg)  # refuse a bad preset or option before writing any file
    if opts.data == "files":
        path = demo_experiment(
            opts.preset, sites=opts.sites, patients=opts.patients, seed=opts.seed, root=opts.workdir, topology=knobs,
            training={"epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr})
        if opts.transport == "local":
            summary = run_in_process(load_experiment(path), transport=opts.transport, run_dir=opts.run_dir,
                                     executor=opts.executor, progress=opts.progress, out=out)
        else:
            summary = run_processes(path, transport=opts.transport, run_dir=opts.run_dir, out=out)
    else:
        torch.manual_seed(opts.seed)
        topology = build_preset(opts.preset, cfg)
        data = preset_data(topology, cfg, seed=opts.seed, patients=int(opts.patients * 0.8))
        trainer = SplitTrainer(topology, data, transport=opts.transport,
                               optimizer=lambda params: torch.optim.Adam(params, lr=opts.lr),
                               batch_size=opts.batch_size, seed=opts.seed,
                               executor=opts.executor)  # type: ignore[arg-type]
        info = {"name": f"demo-{opts.preset}-seed{opts.seed}", "preset": opts.preset, "transport": opts.transport,
                "seed": opts.seed, "nopeek": opts.nopeek, "executor": opts.executor}
        summary = train_and_report(trainer, epochs=opts.epochs, info=info, run_dir=opts.run_dir,
                                   progress=opts.progress, out=out)
    summary["preset"] = opts.preset  # the contract's keys, as the user asked for them
    summary["data"] = opts.data
    return summary


def _knobs(opts: DemoOptions) -> dict[str, Any]:
    """The topology knobs the preset reads; a flag set for a preset that does not read it is refused."""
    spec, default = preset_spec(opts.preset), PresetConfig()
    given = {"ushaped": opts.ushaped, "merge": opts.merge, "nopeek": opts.nopeek}
    for knob, value in given.items():
        if knob not in spec.knobs and value != getattr(default, knob):
            raise ConfigError(f"--{knob} does nothing for preset '{opts.preset}', which reads "
                              f"{', '.join(spec.knobs)}", hint=f"drop --{knob}, or choose a preset that reads it")
    return {knob: value for knob, value in given.items() if knob in spec.knobs}


def write_json(summary: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write atomically (temp file, then rename) so a reader never sees half a summary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
