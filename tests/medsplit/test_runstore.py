"""The run store: aggregates only, readable by another process while the server writes."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from sites.cli import main
from medsplit.runstore import RunStore
from medsplit.errors import ConfigError


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
