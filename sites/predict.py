"""`medsplit predict`: a trained split model, forward on the sites' data; predictions are written at the labels' site.

In one process (``--transport local``) every party's checkpoint must be on this machine; with gloo or rpc each
party runs as its own process and loads its own checkpoint where it lives, only cut tensors (and the
predictions, to the site that owns a task's labels) cross, as in a deployment.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from medsplit.config import Experiment
from medsplit.engine import SplitTrainer
from medsplit.errors import DataError
from medsplit.runtime.checkpoint import checkpoint_steps
from medsplit.runtime.resume import PartyCheckpoints
from medsplit.runtime.session import write_predictions

from .cohort import open_sites

__all__ = ["checkpoint_owner_dir", "predict_in_process"]


def checkpoint_owner_dir(run_dir: Path, party: str) -> Path:
    """The run directory holding a party's checkpoints, whether it ran in-process or as a node."""
    for candidate in (run_dir, run_dir / "sites" / party, run_dir / party):
        if checkpoint_steps(candidate / "checkpoints" / party):
            return candidate
    raise DataError(f"no checkpoint of party '{party}' under {run_dir}",
                        hint="train first (medsplit run ... --run-dir DIR), then predict with the same DIR")


def predict_in_process(exp: Experiment, run_dir: str | Path, out_dir: str | Path, *, batch_size: int = 64,
                       out: TextIO | None = None) -> dict[str, Path]:
    """Run the trained topology forward over every row of each site's data (as its site YAML reads it).

    Each task's predictions are written to ``out_dir/<labels' site>/predictions-<task>.csv`` (row_id,
    prediction): per-patient outputs belong to the site that owns that task's labels.
    """
    out = out or sys.stdout
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    topology = exp.build_topology()
    cohort = open_sites({s.party: s.config for s in exp.sites if s.config is not None}, topology,
                        context=exp.alignment_context(), declared=exp.declared(), require_labels=False)
    trainer = SplitTrainer(topology, cohort.engine_data(topology, every_row=True), batch_size=batch_size,
                           seed=exp.seed, shuffle=False, require_labels=False)
    steps = {}
    for party, runner in trainer.runners.items():
        ckpts = PartyCheckpoints(checkpoint_owner_dir(run_dir, party), party, exp.digest())
        steps[party] = ckpts.steps()[-1]
        runner.load_state(ckpts.load(steps[party])[0])
    if len(set(steps.values())) > 1:
        raise DataError(f"the parties' latest checkpoints are from different steps: {steps}",
                            hint="predict from a run that finished (every party saves at the end)")
    written = {}
    for party, predictions in trainer.predict_by_party().items():
        site = next(s.name for s in exp.sites if s.party == party)
        ids: list[str] = []
        for spec in trainer.schedule.eval_units("predict"):
            if party in spec.rows:
                ids += trainer.data[party].val.row_ids(spec.rows[party])
        for task, values in predictions.items():
            path = out_dir / site / f"predictions-{task}.csv"
            write_predictions(path, task, ids, values.tolist())
            written[f"{site}/{task}"] = path
            print(f"{task}: {len(ids)} predictions written to {path} (at site '{site}', which owns its labels)",
                  file=out)
    return written
