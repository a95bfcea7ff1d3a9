"""Launch: the design as written, started without blocking the page, on data made for it (said first); a run
name that stays in the runs folder; the process, the nodes and the data reports of a run; stop and resume."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from dashboard import launcher
from dashboard.designs import Designs
from dashboard.experiments import default_experiment
from medsplit.config.experiment import load_experiment
from medsplit.runstore import RunStore
from tests.dashboard.helpers import pinned, wait_until


def test_a_run_started_from_the_page_is_queued_at_once_then_trains_and_reports(launched):
    run_dir, at = launched["run_dir"], launched["app"]
    # Start returned before the data was written: the run was listed as queued, the page said so
    assert launched["right_after"]["status"] == "queued"
    assert any("queued" in m for m in launched["right_after"]["markdown"] + launched["right_after"]["success"])
    record = json.loads((run_dir / launcher.LAUNCH_FILE).read_text())
    assert record["argv"][1:] == ["-m", "dashboard.job", str(run_dir)]
    state = launcher.launch_state(run_dir)
    assert state["returncode"] == 0, (run_dir / launcher.LOG_FILE).read_text()[-2000:]
    exp = load_experiment(run_dir / "experiment.yaml")
    designed = yaml.safe_load((run_dir / launcher.DESIGN_FILE).read_text())
    assert exp.topology.preset == "vertical" and exp.training.epochs == 1
    # the topology as designed: its sites, parties, shapes and labels (only the data paths are added)
    assert [(s.name, s.party, dict(s.shapes), list(s.labels)) for s in exp.sites] == [
        (s["name"], s["party"], {k: tuple(m["shape"]) for k, m in s["modalities"].items()}, s["labels"])
        for s in designed["sites"]]
    store = RunStore(run_dir, readonly=True)
    info = store.info()
    assert info["status"] == "completed" and info["transport"] == "gloo" and info["ended"] > info["started"]
    assert "as written" in info["data"]
    assert {"connected", "training", "finished"} <= {e["status"] for e in store.rows("events")}
    assert store.rows("steps") and {h["party"] for h in store.rows("heartbeats")} == {"imaging", "ehr", "server"}
    assert not at.exception and at.selectbox(key="run").value == "from-page"
    tables = [d.value for d in at.dataframe]
    nodes = next(t for t in tables if "status" in t.columns)
    assert dict(zip(nodes["party"], nodes["status"], strict=True)) == {"imaging": "finished", "ehr": "finished",
                                                          "server": "finished"}
    reports = next(t for t in tables if "loaded" in t.columns)
    assert list(reports["site"]) == ["site_1", "site_2"] and list(reports["found"]) == [40, 40]
    assert any(f"Process **{state['pid']}**" in m.value and "exited with status 0" in m.value for m in at.markdown)
    assert any("Run status: **completed**" in m.value for m in at.markdown)
    assert not [b for b in at.button if b.key in ("b_stop", "b_resume")]  # nothing to stop or resume


def test_the_run_name_stays_in_the_runs_folder(app_in, tmp_path):
    root = tmp_path / "runs"
    at = app_in(root, page="launch")
    at.run()
    for name in ("../escape", "a/b", ".hidden"):
        at.text_input(key="l_name").set_value(name).run()
        assert pinned(at, "l_name") and "is not one folder name" in pinned(at, "l_name")[0], name
        assert at.button(key="b_start").disabled
    assert not (tmp_path / "escape").exists() and not list(root.glob("*/run.sqlite"))


def test_launch_says_what_data_it_writes_and_runs_the_design_as_written(app_in, tmp_path):
    root = tmp_path / "runs"
    design = default_experiment("vertical")
    design["sites"][1]["modalities"]["ehr"]["shape"] = [15]  # the study's own shape: `synth --for` writes it
    Designs(root).write("vertical-study", design)
    at = app_in(root, page="launch")
    at.run()
    assert any("synthetic files for this design as written" in i.value for i in at.info)
    assert not at.button(key="b_start").disabled


def test_a_batch_larger_than_the_cohort_is_refused_at_launch(app_in, tmp_path):
    root = tmp_path / "runs"
    design = default_experiment("vanilla")
    design["training"]["batch_size"] = 100000
    Designs(root).write("big", design)
    at = app_in(root, page="launch")
    at.run()
    assert any("Flagged" in w.value for w in at.warning)
    assert "training rows" in pinned(at, "l_patients")[0] and at.button(key="b_start").disabled


def test_stop_and_resume_from_the_page(app_in, new_store, tmp_path, monkeypatch):
    """The page's side of the lifecycle, with a stand-in for the job: Stop signals it and the run records
    stopping; a run whose process died without a final status says so; Resume starts its job again."""
    run_dir = tmp_path / "sleepy"
    store = new_store(run_dir)
    store.log_event("server", "training")
    (run_dir / launcher.JOB_FILE).write_text(json.dumps({"design": {}, "transport": "local", "patients": 40,
                                                         "seed": 0, "resume": False}))
    stand_in = ("import signal, sys, time\n"
                "from medsplit.runstore import RunStore\n"
                "def stop(*_):\n"
                "    RunStore(sys.argv[1]).set_status('stopped', 'stopped by SIGTERM', unless_final=True)\n"
                "    sys.exit(143)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                "open(sys.argv[1] + '/ready', 'w').close()\n"
                "time.sleep(120)\n")
    started = launcher.launch([sys.executable, "-c", stand_in, str(run_dir)], run_dir)
    try:
        wait_until(lambda: (run_dir / "ready").exists(), 60, "the stand-in to start")
        at = app_in(tmp_path, page="launch", run="sleepy")
        at.run()
        assert any(f"Process **{started.pid}**" in m.value and "is running" in m.value for m in at.markdown)
        at.button(key="b_stop").click().run()
        wait_until(lambda: not launcher.launch_state(run_dir)["alive"], 30, "the stand-in to stop")
        at.run()
        info = RunStore(run_dir, readonly=True).info()
        assert (info["status"], info["reason"]) == ("stopped", "stopped by SIGTERM") and info["ended"]
        assert any("Run status: **stopped** (stopped by SIGTERM)" in m.value for m in at.markdown)
        assert any("No checkpoint was saved" in c.value for c in at.caption)  # nothing to resume from yet
        ckpt = run_dir / "checkpoints" / "server" / "step-000000004.pt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")
        at.run()
        monkeypatch.setattr(launcher, "job_argv", lambda path: [sys.executable, "-c", "pass", str(path)])
        at.button(key="b_resume").click().run()
        assert json.loads((run_dir / launcher.JOB_FILE).read_text())["resume"] is True
        info = RunStore(run_dir, readonly=True).info()
        assert (info["status"], info["reason"]) == ("queued", "resuming from its checkpoints") and "ended" not in info
        assert json.loads((run_dir / launcher.LAUNCH_FILE).read_text())["argv"][-1] == str(run_dir)
        wait_until(lambda: not launcher.launch_state(run_dir)["alive"], 60, "the stand-in job to exit")
        at.run()  # it exited without recording an end: the page says so, and offers to resume
        assert any("ended without recording how" in w.value for w in at.warning)
        assert at.button(key="b_resume")
    finally:
        state = launcher.launch_state(run_dir)
        if state and state["alive"]:
            launcher.stop(run_dir, grace=1, wait=True)


def test_a_run_that_ignores_stop_is_killed_and_recorded_stopped(new_store, tmp_path):
    run_dir = tmp_path / "stubborn"
    new_store(run_dir)
    stubborn = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "open(sys.argv[1] + '/ready', 'w').close()\ntime.sleep(120)\n")
    launcher.launch([sys.executable, "-c", stubborn, str(run_dir)], run_dir)
    wait_until(lambda: (run_dir / "ready").exists(), 60, "the stubborn process to start")
    assert launcher.stop(run_dir, grace=1.0, wait=True)
    assert not launcher.launch_state(run_dir)["alive"]
    info = RunStore(run_dir, readonly=True).info()
    assert info["status"] == "stopped" and "did not stop within" in info["reason"] and info["ended"]


def test_synthetic_cohorts_fit_each_preset():
    assert "gloo" in launcher.run_transports() and "local" in launcher.run_transports()
    assert launcher.run_argv("e.yaml", "gloo", "d", resume=True)[3:] == ["run", "e.yaml", "--transport", "gloo",
                                                                         "--run-dir", "d", "--quiet", "--resume"]


def test_the_job_records_a_run_that_ended_without_saying_how(tmp_path):
    """`medsplit run` exits before touching the run store (here: no experiment file to resume): the job records
    the run failed, with the exit status and where the output is."""
    run_dir = tmp_path / "orphan"
    run_dir.mkdir()
    (run_dir / launcher.JOB_FILE).write_text(json.dumps({"design": {}, "transport": "local", "patients": 40,
                                                         "seed": 0, "resume": True}))
    with RunStore(run_dir) as store:
        store.set_status("queued", "resuming from its checkpoints")
    job = subprocess.run(launcher.job_argv(run_dir), cwd=launcher.ROOT, env=launcher.env(), capture_output=True,
                         timeout=300)
    assert job.returncode == 1, job.stderr.decode()[-2000:]
    info = RunStore(run_dir, readonly=True).info()
    assert info["status"] == "failed" and info["ended"]
    assert info["reason"].startswith("`medsplit run` exited with status 2 without recording how the run ended")


def test_a_design_synth_cannot_write_data_for_fails_before_training(tmp_path):
    """The job writes data only with `medsplit synth --for`: a design it refuses (here: no sites) ends the run as
    failed before any training, with synth's own reason in the run's log, and no other data is swapped in."""
    run_dir = tmp_path / "nodata"
    run_dir.mkdir()
    (run_dir / launcher.JOB_FILE).write_text(json.dumps({"design": {"experiment": "empty", "sites": []},
                                                         "transport": "local", "patients": 40, "seed": 0,
                                                         "resume": False}))
    job = subprocess.run(launcher.job_argv(run_dir), cwd=launcher.ROOT, env=launcher.env(), capture_output=True,
                         timeout=300)
    assert job.returncode == 1, job.stderr.decode()[-2000:]
    info = RunStore(run_dir, readonly=True).info()
    assert info["status"] == "failed" and info["reason"].startswith("could not start:")
    assert info["data"] == launcher.SYNTH_DATA
    log = (run_dir / launcher.LOG_FILE).read_text()  # synth's own words, where the run logs
    assert "design.yaml: sites: is empty" in log and "fix: give at least 1 item" in log
    assert not (run_dir / "data").exists() or not list((run_dir / "data").rglob("*.csv"))
    assert not RunStore(run_dir, readonly=True).rows("metrics")
