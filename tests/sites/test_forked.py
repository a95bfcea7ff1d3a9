"""Parties forked from one preloaded process (share_imports) train exactly as parties started as programs."""

from __future__ import annotations

import io

import pytest

from sites.cohort import demo_experiment
from sites.launch import run_processes

pytestmark = pytest.mark.slow


def test_forked_parties_give_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same reduction order in both runs
    exp = demo_experiment("splitfed", sites=2, patients=24, seed=5, root=tmp_path / "data",
                          training={"epochs": 1, "batch_size": 8, "timeout": 120, "rejoin_timeout": 240})
    programs = run_processes(exp, run_dir=tmp_path / "exec", out=io.StringIO(), timeout=600)
    forked = run_processes(exp, run_dir=tmp_path / "fork", out=io.StringIO(), timeout=600, share_imports=True)
    assert forked["steps"] == programs["steps"] > 0 and forked["bytes"] == programs["bytes"]
    assert forked["train_loss"] == pytest.approx(programs["train_loss"], abs=1e-6)
    for task, metrics in programs["metrics"].items():
        for name, value in metrics.items():
            assert forked["metrics"][task][name] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, name)
    assert "val_auc" in (tmp_path / "fork" / "logs" / "server.log").read_text()  # the forked server logs there
