"""Launch: a synthetic run started from the page as a child process, its nodes' status, and stopping it."""

from __future__ import annotations

import json
import sys

from dashboard import launcher
from medsplit.config.experiment import load_experiment
from medsplit.runstore import RunStore


def test_a_run_started_from_the_page_trains_and_reports(launched):
    run_dir, at = launched["run_dir"], launched["app"]
    record = json.loads((run_dir / launcher.LAUNCH_FILE).read_text())
    assert record["argv"][2:4] == ["sites.cli", "run"]  # `medsplit run EXP.yaml --transport gloo --run-dir`
    assert record["argv"][5:] == ["--transport", "gloo", "--run-dir", str(run_dir)]
    state = launcher.launch_state(run_dir)
    assert state["returncode"] == 0, (run_dir / launcher.LOG_FILE).read_text()[-2000:]
    exp = load_experiment(run_dir / "experiment.yaml")
    assert exp.topology.preset == "vertical" and exp.training.epochs == 1
    assert [s.party for s in exp.sites] == ["imaging", "ehr"]
    store = RunStore(run_dir, readonly=True)
    assert store.info()["status"] == "completed" and store.info()["transport"] == "gloo"
    assert {"connected", "training", "finished"} <= {e["status"] for e in store.rows("events")}
    assert not at.exception and at.selectbox(key="run").value == "from-page"
    tables = [d.value for d in at.dataframe]
    nodes = next(t for t in tables if "status" in t.columns)
    assert dict(zip(nodes["party"], nodes["status"])) == {"imaging": "finished", "ehr": "finished",
                                                          "server": "finished"}
    reports = next(t for t in tables if "loaded" in t.columns)
    assert list(reports["site"]) == ["site_1", "site_2"] and list(reports["found"]) == [40, 40]
    assert any(f"Process **{state['pid']}**" in m.value and "exited with status 0" in m.value for m in at.markdown)


def test_a_running_launch_can_be_stopped_from_the_page(app_in, new_store, tmp_path):
    run_dir = tmp_path / "sleepy"
    new_store(run_dir).log_event("server", "training")
    started = launcher.launch([sys.executable, "-c", "import time; time.sleep(120)"], run_dir)
    try:
        at = app_in(tmp_path, page="launch", run="sleepy")
        at.run()
        assert any(f"Process **{started.pid}**" in m.value and "is running" in m.value for m in at.markdown)
        at.button(key="b_stop").click().run()
        state = launcher.launch_state(run_dir)
        assert not state["alive"] and state["returncode"] is not None
        assert any("has exited" in m.value for m in at.markdown)
    finally:
        if launcher.launch_state(run_dir)["alive"]:
            launcher.stop(run_dir, grace=1)


def test_synthetic_cohorts_fit_each_preset():
    assert launcher.synth_layout("vertical", 5) == ("vertical", 2)
    assert launcher.synth_layout("splitfed", 4) == ("horizontal", 4)
    assert launcher.synth_layout("horizontal", 1) == ("horizontal", 2)
    assert launcher.synth_layout("multihop", 1) == ("horizontal", 1)
    assert "gloo" in launcher.run_transports() and "local" in launcher.run_transports()
