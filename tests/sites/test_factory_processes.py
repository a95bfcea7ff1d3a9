"""A study's own topology factory, from a package outside the project, runs as processes exactly as a preset does.

Every party imports the factory from its own installed code (here: a folder on each process's PYTHONPATH); the
runs over gloo and rpc give the in-process losses and metrics to 1e-6, and the same bytes and steps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medsplit.config import load_experiment
from sites.cli import main as medsplit
from sites.launch import run_processes
from sites.run import run_in_process

pytestmark = pytest.mark.slow

@pytest.fixture
def study(tmp_path: Path, outside_package: None) -> Path:
    """Files `medsplit synth --for` wrote for a design whose topology is the outside package's factory."""
    design = tmp_path / "design.yaml"
    design.write_text(yaml.safe_dump({
        "experiment": "own-factory", "seed": 3,
        "topology": {"factory": "mystudy.topologies:build", "hidden": 8},
        "training": {"epochs": 2, "batch_size": 8, "lr": 0.01, "checkpoint_every": 100, "timeout": 60,
                     "rejoin_timeout": 120},
        "sites": [{"name": "clinic", "modalities": {"labs": {"shape": [6], "kind": "table"}},
                   "labels": ["outcome"]}]}, sort_keys=False))
    assert medsplit(["synth", "--for", str(design), "--out", str(tmp_path / "data"), "--patients", "40"]) == 0
    return tmp_path / "data" / "experiment.yaml"


@pytest.mark.parametrize("transport", ["gloo", "rpc"])
def test_a_factory_from_outside_the_project_runs_as_processes_like_in_process(study, tmp_path, transport):
    exp = load_experiment(study)
    assert exp.topology.factory == "mystudy.topologies:build"
    local = run_in_process(exp, run_dir=tmp_path / "local", progress=False)
    nodes = run_processes(study, transport=transport, run_dir=tmp_path / transport, timeout=300)
    assert nodes["session"] == 1, (tmp_path / transport / "logs" / "server.log").read_text()
    assert [h["epoch"] for h in nodes["history"]] == [1, 2]
    for a, b in zip(local["history"], nodes["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
        assert b["metrics"]["outcome"]["val_auc"] == pytest.approx(a["metrics"]["outcome"]["val_auc"], abs=1e-6)
    assert nodes["bytes"] == local["bytes"] and nodes["steps"] == local["steps"] > 0
    assert "seconds" in nodes and "seconds" in local
