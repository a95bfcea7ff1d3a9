"""The run store: aggregates only, readable by another process while the server writes."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from medsplit.errors import ConfigError
from medsplit.runstore import RunStore, StepLog
from sites.cli import main


def test_write_and_read_back(tmp_path):
    store = RunStore(tmp_path / "run")
    store.set_info(name="r1", status="running", config={"preset": "vanilla", "epochs": 2})
    store.log_metrics(1, 10, {"diagnosis": {"val_auc": 0.8, "val_loss": 0.5, "n": 40}}, "val")
    store.log_event("hospital", "connected")
    store.log_event("hospital", "down", "connection reset")
    store.log_traffic(1, 10, {"hospital": {"sent": {"activation": 100}, "received": {"gradient": 90}}})
    info = RunStore(tmp_path / "run", readonly=True).info()
    assert info == {"name": "r1", "status": "running", "config": {"preset": "vanilla", "epochs": 2}}
    rows = {(r["split"], r["name"]): r["value"] for r in store.rows("metrics")}
    assert rows == {("val", "auc"): 0.8, ("val", "loss"): 0.5}  # the row count "n" is not a metric
    assert store.node_status()["hospital"]["status"] == "down"
    with pytest.raises(ConfigError, match="unknown node status"):
        store.log_event("hospital", "sleeping")
    with pytest.raises(ConfigError, match="no table"):
        store.rows("sqlite_master")
    with pytest.raises(FileNotFoundError):
        RunStore(tmp_path / "nothing", readonly=True)


def test_wal_lets_another_process_read_while_writing(tmp_path):
    store = RunStore(tmp_path)
    store.log_event("server", "training")
    reader = ("import sys; from medsplit.runstore import RunStore; "
              "s = RunStore(sys.argv[1], readonly=True); print(len(s.rows('events')))")
    db = sqlite3.connect(tmp_path / "run.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with store._tx():  # a write transaction is open while the other process reads
        store._db.execute("INSERT INTO events VALUES (0, 'x', 'training', '')")
        out = subprocess.run([sys.executable, "-c", reader, str(tmp_path)], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"  # sees the committed row, not the uncommitted one, and did not block
    assert len(store.rows("events")) == 2


def test_demo_run_store_holds_no_patient_ids(tmp_path):
    run = tmp_path / "run"
    assert main(["demo", "--preset", "vertical", "--epochs", "2", "--patients", "60", "--workdir",
                 str(tmp_path / "data"), "--run-dir", str(run), "--quiet"]) == 0
    store = RunStore(run, readonly=True)
    assert store.info()["status"] == "completed"
    epochs = {r["epoch"] for r in store.rows("metrics") if r["split"] == "val" and r["name"] == "auc"}
    assert epochs == {1, 2}
    assert {r["party"] for r in store.rows("timings")} == {"imaging", "ehr", "server"}
    assert {r["kind"] for r in store.rows("audit")} >= {"activation", "psi", "fingerprint"}
    dump = "\n".join(sqlite3.connect(run / "run.sqlite").iterdump())
    ids = []
    for csv in (tmp_path / "data").rglob("*.csv"):
        ids += [line.split(",")[0] for line in csv.read_text().splitlines()[1:]]
    assert len(ids) > 50
    tokens = set(re.findall(r"[A-Za-z0-9_-]+", dump))  # whole tokens: an ID is never a part of a float
    assert not [i for i in ids if i in tokens]


def test_the_lifecycle_records_each_end_and_whoever_saw_it_first(tmp_path):
    store = RunStore(tmp_path / "run")
    store.set_status("queued", "writing data")
    store.set_status("running")
    assert "ended" not in store.info()
    assert store.set_status("stopped", "stopped by SIGTERM", unless_final=True)
    ended = store.info()["ended"]
    # a later "stopping" (the job's, after the run's own "stopped") changes nothing
    assert not store.set_status("stopping", "Stop", unless_final=True)
    assert (store.info()["status"], store.info()["reason"], store.info()["ended"]) == ("stopped", "stopped by SIGTERM",
                                                                                      ended)
    store.set_info(error="boom")
    store.set_status("queued", "resuming")  # queued again: no end, no error
    assert "ended" not in store.info() and "error" not in store.info()
    with pytest.raises(ConfigError, match="unknown run status"):
        store.set_status("paused")


def test_live_steps_are_written_a_few_times_a_second(tmp_path):
    store = RunStore(tmp_path / "run")
    log = StepLog(store, interval=60.0)
    flows = [{"src": "a", "dst": "b", "edge": "e", "kind": "activation", "phase": "train", "count": 1, "bytes": 8}]
    writes = 0
    for step in range(1, 101):
        if log.due(force=step == 100):
            flows[0] = {**flows[0], "count": step, "bytes": 8 * step}
            log.write(1, step, 100, step, {"t": 0.5}, flows, ["a"])
            writes += 1
    assert writes == 2  # the first step, then the epoch's last (forced); the rest fall within the interval
    assert [r["done"] for r in store.rows("steps")] == [1, 100]
    assert [r["count"] for r in store.rows("flows")] == [1, 100]
    log.write(1, 100, 100, 100, {"t": 0.5}, flows, ["b"])
    assert len(store.rows("flows")) == 2  # unchanged transfers are not written again
    assert {r["party"] for r in store.rows("heartbeats")} == {"a", "b"}


def test_a_meter_counts_each_transfer_once_and_the_plan_declares_each_kind():
    import torch

    from medsplit.plan import compile_topology
    from medsplit.runstore import declared_flows
    from medsplit.topology import build_preset
    from medsplit.wire import Kind, Message, Meter

    meter = Meter()
    msg = Message(1, "e", Kind.ACTIVATION, "site", "server", torch.zeros(4, 8))
    meter.record(msg, "sent")
    meter.record(msg, "received")  # the same tensor at its other end, in the same process
    meter.record(Message(1, "e", Kind.GRADIENT, "server", "site", torch.zeros(4, 8)), "received")
    assert meter.flows() == [
        {"src": "server", "dst": "site", "edge": "e", "kind": "gradient", "phase": "train", "count": 1, "bytes": 128},
        {"src": "site", "dst": "server", "edge": "e", "kind": "activation", "phase": "train", "count": 1, "bytes": 128}]
    plan = compile_topology(build_preset("vertical"))
    declared = {(d["kind"], d["src"], d["dst"]): d["bytes"] for d in declared_flows(plan, 16)}
    cut = 4 * 16 * 32  # float32 x batch x the cut's 32 features
    assert declared[("activation", "imaging", "server")] == declared[("gradient", "server", "imaging")] == cut
    assert declared[("label", "ehr", "server")] == 4 * 16 and declared[("fingerprint", "ehr", "server")] == 32
    assert declared[("psi", "*", "*")] is None
