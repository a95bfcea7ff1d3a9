"""`medsplit predict`: a trained split model, forward on site data, with predictions kept at the labels' site."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TextIO

from .checkpoint import checkpoint_steps, load_checkpoint
from .engine import SplitTrainer
from .errors import MedsplitError
from .experiment import Experiment
from .schedule import Schedule

__all__ = ["find_checkpoint_dir", "predict_in_process"]


def find_checkpoint_dir(run_dir: Path, party: str) -> Path:
    """A party's checkpoints in a run directory, whether it ran in-process or as a node."""
    for candidate in (run_dir / "checkpoints" / party, run_dir / "sites" / party / "checkpoints" / party,
                      run_dir / party / "checkpoints" / party):
        if checkpoint_steps(candidate):
            return candidate
    raise MedsplitError(f"no checkpoint of party '{party}' under {run_dir}",
                        hint="train first (medsplit run ... --run-dir DIR), then predict with the same DIR")


def predict_in_process(exp: Experiment, run_dir: str | Path, out_dir: str | Path, *, batch_size: int = 64,
                       out: TextIO | None = None) -> dict[str, Path]:
    """Run the trained topology forward over every row of each site's data (as its site YAML reads it).

    Each task's predictions are written to ``out_dir/<labels' site>/predictions-<task>.csv`` (row_id,
    prediction): per-patient outputs belong to the site that owns that task's labels.
    """
    from data_adapters.cohort import open_sites

    out = out or sys.stdout
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    topology = exp.build_topology()
    cohort = open_sites({s.party: s.config for s in exp.sites}, align=topology.schedule == "joint")
    trainer = SplitTrainer(topology, cohort.all_rows(topology), batch_size=batch_size, seed=exp.seed,
                           shuffle=False, require_labels=False)
    from .node import experiment_digest

    steps = {}
    for party, runner in trainer.runners.items():
        folder = find_checkpoint_dir(run_dir, party)
        steps[party] = checkpoint_steps(folder)[-1]
        state = load_checkpoint(folder, steps[party])
        if state["meta"].get("digest") != experiment_digest(exp):
            raise MedsplitError(f"the checkpoints in {folder} were trained with another experiment than {exp.path}",
                                hint="predict with the experiment file the model was trained with")
        runner.load_state(state["runner"])
    if len(set(steps.values())) > 1:
        raise MedsplitError(f"the parties' latest checkpoints are from different steps: {steps}",
                            hint="predict from a run that finished (every party saves at the end)")
    predictions = trainer.predict()
    written = {}
    for task_name, values in predictions.items():
        task = trainer.plan.tasks[task_name]
        owner = trainer.plan.label_owners(task.label)[0]
        site = next(s.name for s in exp.sites if s.party == owner)
        ids = []
        for spec in Schedule(trainer.plan, trainer.schedule.rows, batch_size, exp.seed).eval_units("predict"):
            party = owner if owner in spec.rows else next(iter(spec.rows))
            ids += trainer.data[party].val.row_ids(spec.rows[party])
        path = out_dir / site / f"predictions-{task_name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row_id", task_name])
            for rid, value in zip(ids, values.tolist()):
                writer.writerow([rid, value if not isinstance(value, list) else ";".join(f"{v:.6f}" for v in value)])
        written[task_name] = path
        print(f"{task_name}: {len(ids)} predictions written to {path} (at site '{site}', which owns its labels)",
              file=out)
    return written
