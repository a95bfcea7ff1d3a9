"""An in-process run stopped by SIGTERM records why, and resumed from its checkpoints ends where an uninterrupted
run ends; its run store carries the live steps the dashboard shows."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from medsplit.config import load_experiment
from medsplit.runstore import RunStore
from medsplit.runtime.resume import PartyCheckpoints
from sites import run as run_module
from sites.cli import main
from sites.cohort import demo_experiment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return load_experiment(demo_experiment("vertical", sites=2, patients=40, seed=3, root=root,
                                           training={"epochs": 3, "batch_size": 8}))


def _weights(run_dir, exp) -> dict[str, torch.Tensor]:
    out = {}
    for party in ("imaging", "ehr", "server"):
        ckpts = PartyCheckpoints(run_dir, party, exp.digest())
        state, _ = ckpts.load(ckpts.steps()[-1])
        out |= {f"{m}.{k}": v for m, sd in state["modules"].items() for k, v in sd.items()}
    return out


def test_stop_then_resume_equals_the_uninterrupted_run(experiment, tmp_path, monkeypatch):
    whole = run_module.run_in_process(experiment, run_dir=tmp_path / "whole", progress=False, out=io.StringIO())

    saved = run_module.save_checkpoints

    def stop_after_the_first_epoch(trainer, run_dir, digest, record=None):
        saved(trainer, run_dir, digest, record)
        if record is not None and record.epoch == 1:
            raise KeyboardInterrupt("SIGTERM")  # what `medsplit run` raises on SIGTERM

    monkeypatch.setattr(run_module, "save_checkpoints", stop_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_module.run_in_process(experiment, run_dir=tmp_path / "split", progress=False, out=io.StringIO())
    info = RunStore(tmp_path / "split", readonly=True).info()
    assert (info["status"], info["reason"]) == ("stopped", "stopped by SIGTERM") and info["ended"] > info["started"]
    monkeypatch.setattr(run_module, "save_checkpoints", saved)

    resumed = run_module.run_in_process(experiment, run_dir=tmp_path / "split", progress=False, out=io.StringIO(),
                                        resume=True)
    assert resumed["metrics"] == whole["metrics"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    a, b = _weights(tmp_path / "whole", experiment), _weights(tmp_path / "split", experiment)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    store = RunStore(tmp_path / "split", readonly=True)
    info = store.info()
    assert info["status"] == "completed" and info["resumes"] == 1 and "ended" in info
    epochs = sorted(r["epoch"] for r in store.rows("metrics") if (r["split"], r["name"]) == ("val", "auc"))
    assert epochs == [1, 2, 3]  # each epoch recorded once
    steps = store.rows("steps")
    assert [s["done"] for s in steps if s["epoch"] == 3][-1] == info["steps_per_epoch"]
    assert {h["party"] for h in store.rows("heartbeats")} == {"imaging", "ehr", "server"}


def test_resume_without_checkpoints_says_what_to_do(experiment, tmp_path, capsys):
    assert main(["run", str(experiment.path), "--run-dir", str(tmp_path / "none"), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume from" in err and "without --resume" in err


@pytest.mark.slow
def test_sigterm_stops_a_run_over_gloo_and_every_party_records_it(experiment, tmp_path):
    """What the dashboard's Stop does: SIGTERM to `medsplit run`'s process group. Each party is its own process;
    the run store says stopped, when and why, and no party is left running."""
    data = yaml.safe_load(experiment.path.read_text())
    data["training"]["epochs"] = 30  # long enough to be stopped: the EHR site's encoder takes 0.12 s a batch
    data["sites"][1]["modalities"]["ehr"]["encoder"] = {"kind": "module", "module": "tests.dashboard.pace:encoder"}
    path = experiment.path.with_name("paced.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run_dir = tmp_path / "gloo"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "sites.cli", "run", str(path), "--transport", "gloo", "--run-dir",
                             str(run_dir), "--quiet"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not ((run_dir / "run.sqlite").exists() and RunStore(run_dir, readonly=True).rows("steps")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 143
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    info = RunStore(run_dir, readonly=True).info()
    assert (info["status"], info["reason"]) == ("stopped", "stopped by SIGTERM") and info["ended"] > info["started"]
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(run_dir).encode() in _cmdline(p)]
    assert not left, "party processes outlived the run"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
