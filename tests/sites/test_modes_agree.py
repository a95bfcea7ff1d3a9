"""Every preset run as processes over gloo gives the in-process run's metrics and final weights."""

from __future__ import annotations

import pytest
import torch

from medsplit.config import load_experiment
from medsplit.runtime.resume import PartyCheckpoints
from sites.cohort import demo_experiment
from sites.launch import run_processes
from sites.predict import checkpoint_owner_dir
from sites.run import run_in_process

pytestmark = pytest.mark.slow

# Vertical U-shaped (CT + EHR) is the worked example experiments/vertical-ushaped.yaml, checked the same way from
# its own files in test_worked_examples.py.
CASES = {
    "vanilla": {}, "ushaped": {}, "vertical": {}, "multitask": {}, "multihop": {"hops": 2}, "horizontal": {},
    "splitfed": {},
}


def _weights(run_dir, exp, party: str) -> dict[str, torch.Tensor]:
    ckpts = PartyCheckpoints(checkpoint_owner_dir(run_dir, party), party, exp.digest())
    state, _ = ckpts.load(ckpts.steps()[-1])
    return {f"{seg}.{k}": v for seg, sd in state["modules"].items() for k, v in sd.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_gloo_processes_equal_the_in_process_run(tmp_path, case):
    preset = case.split("-")[0]
    exp_path = demo_experiment(preset, sites=2, patients=40, seed=5, root=tmp_path / "data", topology=CASES[case],
                               training={"epochs": 2, "batch_size": 8, "lr": 0.01, "checkpoint_every": 3,
                                         "timeout": 60, "rejoin_timeout": 120})
    exp = load_experiment(exp_path)
    local = run_in_process(exp, run_dir=tmp_path / "local", progress=False)
    nodes = run_processes(exp_path, transport="gloo", run_dir=tmp_path / "nodes", timeout=300)
    # One session: no party failed, so nothing was resumed (a resume re-draws the data augmentation).
    assert nodes["session"] == 1, (tmp_path / "nodes" / "logs" / "server.log").read_text()
    assert [h["epoch"] for h in nodes["history"]] == [1, 2]
    for a, b in zip(local["history"], nodes["history"], strict=True):
        assert a["metrics"].keys() == b["metrics"].keys()
        for task in a["metrics"]:
            for name, value in a["metrics"][task].items():
                assert b["metrics"][task][name] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, name)
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
        assert b["dcor"] == pytest.approx(a["dcor"], abs=1e-6)
    # The same bytes crossed, and every party ended with the same weights.
    assert nodes["bytes"] == local["bytes"]
    assert {"seconds", "steps"} <= set(nodes) and nodes["steps"] == local["steps"]
    plan_parties = [p.name for p in exp.build_topology().parties]
    for party in plan_parties:
        mine, theirs = _weights(tmp_path / "local", exp, party), _weights(tmp_path / "nodes", exp, party)
        assert mine.keys() == theirs.keys() and mine
        for k in mine:
            torch.testing.assert_close(theirs[k], mine[k], rtol=0, atol=1e-6, msg=f"{party} {k}")

