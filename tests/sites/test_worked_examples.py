"""The worked examples of sites/examples/README.md, run as a study coordinator would: the cohort from the command in
the experiment's header, then every party in one process and as processes over gloo, with identical metrics.

Each run is tiny (a few dozen patients, two epochs): this checks that the files work together and that the modes
agree, not what the study learns (benchmarks/vertical_tables.py measures that).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from medsplit.config import load_experiment
from sites.cli import main as medsplit
from sites.launch import run_processes
from sites.run import run_in_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: experiment -> patients per site (images decode slowly, tables do not; enough for a validation split)
EXAMPLES = {"vertical-two-ehr": 40, "horizontal-ehr": 24, "splitfed-ehr": 24, "vertical-ushaped": 20,
            "vertical-ct-mr-ehr": 20}
TRAINING = {"epochs": 2, "batch_size": 8, "lr": 0.01, "checkpoint_every": 100, "timeout": 60, "rejoin_timeout": 120}


def documented_synth(experiment: Path) -> list[str]:
    """The `medsplit synth ...` command in an experiment's header, without `medsplit`."""
    for line in experiment.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.lstrip("# ").startswith("medsplit synth "):
            return shlex.split(line.lstrip("# "))[1:]
    raise AssertionError(f"{experiment.name} documents no `medsplit synth` command in its header")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_worked_example_runs_from_synth_files_identically_in_process_and_over_gloo(tmp_path, name):
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copytree(ROOT / "sites" / "examples", tmp_path / "sites" / "examples")
    path = tmp_path / "experiments" / f"{name}.yaml"
    argv = documented_synth(path)
    argv[argv.index("--patients") + 1] = str(EXAMPLES[name])
    for flag in ("--out", "--for"):  # paths in the command are relative to the repository root
        if flag in argv:
            argv[argv.index(flag) + 1] = str(tmp_path / argv[argv.index(flag) + 1])
    assert medsplit(argv) == 0
    data = yaml.safe_load(path.read_text())
    data["training"] = TRAINING
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    exp = load_experiment(path)
    local = run_in_process(exp, run_dir=tmp_path / "local", progress=False)
    nodes = run_processes(path, transport="gloo", run_dir=tmp_path / "nodes", timeout=300)
    assert nodes["session"] == 1, (tmp_path / "nodes" / "logs" / "server.log").read_text()
    assert [h["epoch"] for h in nodes["history"]] == [1, 2]
    tasks = {t.name for t in exp.tasks}
    for a, b in zip(local["history"], nodes["history"], strict=True):
        assert set(a["metrics"]) == set(b["metrics"]) == tasks
        for task, metrics in a["metrics"].items():
            for metric, value in metrics.items():
                assert b["metrics"][task][metric] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, metric)
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
    assert nodes["bytes"] == local["bytes"] and nodes["steps"] == local["steps"] > 0
