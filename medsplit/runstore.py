"""The run store: one SQLite database (WAL) per run, written by the server, read live by the dashboard.

It holds aggregates only: the run's config, metrics per epoch (and step) per task, bytes and timings per
party, node status events, the audit summary and NoPeek's dCor, and live progress a few times a second
(step counter, latest loss, bytes per transfer so far, when each party was last heard from). Never raw data,
patient IDs or per-patient outputs.

Tables:
    run(key, value)                                   config, status, reason, name, preset, transport,
                                                      started/ended, declared (the plan's transfers)
    metrics(ts, epoch, step, task, split, name, value) split: train|val; name: loss|auc|acc|mse
    traffic(ts, epoch, step, party, direction, kind, bytes)   cumulative bytes at that point
    timings(ts, epoch, party, steps, seconds, flops_per_step) per epoch
    events(ts, party, status, detail)                 status: connected|training|down|resumed|finished|refused|failed
    audit(src, dst, edge, kind, count, bytes, shapes, dtypes)  the run's audit summary (latest)
    privacy(ts, epoch, segment, dcor)                 distance correlation of a site's cut with its raw input
    steps(ts, epoch, done, total, train_steps, losses)  live: ``done`` of ``total`` steps of epoch ``epoch``
    flows(ts, train_steps, src, dst, edge, kind, phase, count, bytes)  live: cumulative, each transfer once
    heartbeats(party, ts, train_steps)                when the writer last heard from each party

A run's status (``RUN_STATUSES``) goes queued -> running -> completed, or to failed, or (stopping ->)
stopped; a stopped or failed run can be queued again to resume from its checkpoints.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from .engine.report import EpochRecord
    from .plan import Plan

__all__ = ["RunStore", "STATUSES", "RUN_STATUSES", "FINAL_STATUSES", "RUNSTORE_FILE", "StepLog", "declared_flows",
           "stop_reason"]

RUNSTORE_FILE = "run.sqlite"
STATUSES = ("connected", "training", "down", "resumed", "finished", "refused", "failed")  # a node's
RUN_STATUSES = ("queued", "running", "stopping", "stopped", "failed", "completed")  # the run's lifecycle
FINAL_STATUSES = ("stopped", "failed", "completed")
_TABLES = ("metrics", "traffic", "timings", "events", "audit", "privacy", "steps", "flows", "heartbeats")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (ts REAL, epoch INTEGER, step INTEGER, task TEXT, split TEXT, name TEXT,
                                    value REAL);
CREATE TABLE IF NOT EXISTS traffic (ts REAL, epoch INTEGER, step INTEGER, party TEXT, direction TEXT, kind TEXT,
                                    bytes INTEGER);
CREATE TABLE IF NOT EXISTS timings (ts REAL, epoch INTEGER, party TEXT, steps INTEGER, seconds REAL,
                                    flops_per_step INTEGER);
CREATE TABLE IF NOT EXISTS events (ts REAL, party TEXT, status TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS audit (src TEXT, dst TEXT, edge TEXT, kind TEXT, count INTEGER, bytes INTEGER,
                                  shapes TEXT, dtypes TEXT, PRIMARY KEY (src, dst, edge, kind));
CREATE TABLE IF NOT EXISTS privacy (ts REAL, epoch INTEGER, segment TEXT, dcor REAL);
CREATE TABLE IF NOT EXISTS steps (ts REAL, epoch INTEGER, done INTEGER, total INTEGER, train_steps INTEGER,
                                  losses TEXT);
CREATE TABLE IF NOT EXISTS flows (ts REAL, train_steps INTEGER, src TEXT, dst TEXT, edge TEXT, kind TEXT, phase TEXT,
                                  count INTEGER, bytes INTEGER);
CREATE TABLE IF NOT EXISTS heartbeats (party TEXT PRIMARY KEY, ts REAL, train_steps INTEGER);
CREATE INDEX IF NOT EXISTS metrics_epoch ON metrics (task, split, name, epoch);
"""


class RunStore:
    """Open (creating if needed) the run store at ``path`` (a file, or a run directory holding run.sqlite).

    Writers and readers may be different processes at the same time: WAL mode lets the dashboard read
    while the server writes. ``readonly=True`` opens without creating anything.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        path = Path(path)
        if path.is_dir() or path.suffix == "":
            path = path / RUNSTORE_FILE
        self.path = path
        self._lock = threading.Lock()
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"no run store at {path}")
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
            try:
                self._db.execute("SELECT 1 FROM run LIMIT 1")
            except sqlite3.OperationalError:
                # A finished store on a read-only mount: WAL needs a writable folder, an immutable open does not.
                self._db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise

    # --- writing (the server) ----------------------------------------------------------------------

    def set_info(self, **values: Any) -> None:
        """Run-level facts: name, preset, transport, status, config (dicts are stored as JSON)."""
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO run (key, value) VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])

    def set_status(self, status: str, reason: str = "", *, unless_final: bool = False) -> bool:
        """Move the run's lifecycle to ``status`` with its ``reason``; a final status records ``ended``, queued and
        running clear it. With ``unless_final`` a run that has already ended keeps its status (returns False):
        whoever saw the end first wrote why."""
        if status not in RUN_STATUSES:
            raise ConfigError(f"unknown run status '{status}'", hint=f"use one of {', '.join(RUN_STATUSES)}")
        with self._tx() as db:
            row = db.execute("SELECT value FROM run WHERE key = 'status'").fetchone()
            if unless_final and row is not None and json.loads(row[0]) in FINAL_STATUSES:
                return False
            values: dict[str, Any] = {"status": status, "reason": reason}
            if status in FINAL_STATUSES:
                values["ended"] = time.time()
            elif status in ("queued", "running"):
                db.execute("DELETE FROM run WHERE key IN ('ended', 'error')")
            db.executemany("INSERT OR REPLACE INTO run (key, value) VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])
        return True

    def log_step(self, epoch: int, done: int, total: int, train_steps: int, losses: Mapping[str, float],
                 flows: Sequence[Mapping[str, Any]] = (), seen: Sequence[str] = ()) -> None:
        """Live progress: ``done`` of ``total`` steps of epoch ``epoch`` (1-based), the latest loss per task, the
        transfers so far (cumulative rows of ``Meter.flows()``) and the parties heard from since the last call."""
        ts = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?)",
                       (ts, epoch, done, total, train_steps, json.dumps({t: float(v) for t, v in losses.items()})))
            db.executemany("INSERT INTO flows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(ts, train_steps, f["src"], f["dst"], f["edge"], f["kind"], f["phase"], int(f["count"]),
                             int(f["bytes"])) for f in flows])
            db.executemany("INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?)",
                           [(party, ts, train_steps) for party in seen])

    def heard(self, parties: list[str], train_steps: int) -> None:
        """Each of ``parties`` was heard from now (a heartbeat)."""
        ts = time.time()
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?)",
                           [(party, ts, train_steps) for party in parties])

    def set_plan(self, declared: list[dict[str, Any]], batch_size: int, steps_per_epoch: int) -> None:
        """What the plan says may cross (``declared_flows``), for the live view to measure transfers against."""
        self.set_info(declared=declared, batch_size=batch_size, steps_per_epoch=steps_per_epoch)

    def log_metrics(self, epoch: int, step: int, metrics: Mapping[str, Mapping[str, float]], split: str) -> None:
        """{task: {name: value}}; names like val_auc are stored as split='val', name='auc'."""
        ts = time.time()
        rows = []
        for task, values in metrics.items():
            for name, value in values.items():
                if name == "n" or value is None:
                    continue
                short = name.split("_", 1)[1] if name.startswith(("val_", "train_")) else name
                rows.append((ts, epoch, step, task, split, short, float(value)))
        with self._tx() as db:
            db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def log_traffic(self, epoch: int, step: int, by_party_kind: Mapping[str, Mapping[str, Mapping[str, int]]]) -> None:
        """{party: {direction: {kind: cumulative bytes}}}."""
        ts = time.time()
        rows = [(ts, epoch, step, party, direction, kind, int(b))
                for party, dirs in by_party_kind.items() for direction, kinds in dirs.items()
                for kind, b in kinds.items()]
        with self._tx() as db:
            db.executemany("INSERT INTO traffic VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def log_timing(self, epoch: int, party: str, steps: int, seconds: float, flops_per_step: int) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO timings VALUES (?, ?, ?, ?, ?, ?)",
                       (time.time(), epoch, party, steps, seconds, int(flops_per_step)))

    def log_event(self, party: str, status: str, detail: str = "") -> None:
        if status not in STATUSES:
            raise ConfigError(f"unknown node status '{status}'", hint=f"use one of {', '.join(STATUSES)}")
        with self._tx() as db:
            db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (time.time(), party, status, detail))

    def set_audit(self, rows: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM audit")
            db.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(r["src"], r["dst"], r["edge"], r["kind"], r["count"], r["bytes"],
                             json.dumps(r.get("shapes", [])), json.dumps(r.get("dtypes", []))) for r in rows])

    def log_dcor(self, epoch: int, dcor: Mapping[str, float]) -> None:
        ts = time.time()
        with self._tx() as db:
            db.executemany("INSERT INTO privacy VALUES (?, ?, ?, ?)",
                           [(ts, epoch, seg, float(v)) for seg, v in dcor.items() if v is not None])

    def record_epoch(self, record: EpochRecord, reports: Mapping[str, Mapping[str, Any]]) -> None:
        """What one epoch produced: its merged record and every party's report (``engine.report``)."""
        step = record.steps
        self.log_metrics(record.epoch, step, {t: {"loss": v} for t, v in record.train_loss.items()}, "train")
        self.log_metrics(record.epoch, step, record.metrics, "val")
        self.log_traffic(record.epoch, step, {p: r["bytes"] for p, r in reports.items()})
        for party, r in reports.items():
            self.log_timing(record.epoch, party, step, r["compute_seconds"], r["flops"])
        self.log_dcor(record.epoch, record.dcor)
        # Each party's report lists what it sent: together, every crossing once.
        self.set_audit([row for r in reports.values() for row in r["audit"]])

    # --- reading (the dashboard, tests) -------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM run")}

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a table as dicts (tables are small: aggregates only)."""
        if table not in _TABLES:
            raise ConfigError(f"the run store has no table '{table}'", hint=f"tables: {', '.join(_TABLES)}")
        try:
            cur = self._db.execute(f"SELECT * FROM {table}")  # noqa: S608 - table name checked above
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a store written before the table existed, opened read-only
                return []
            raise
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=False)) for r in cur.fetchall()]

    def frame(self, table: str) -> pd.DataFrame:
        """A table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows(table))

    def node_status(self) -> dict[str, dict[str, Any]]:
        """The latest status event of every party."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows("events"):
            if row["party"] not in out or row["ts"] >= out[row["party"]]["ts"]:
                out[row["party"]] = row
        return out



def stop_reason(exc: BaseException) -> str:
    """Why a run stopped, from the KeyboardInterrupt that stopped it (the CLI names the signal it turned into one)."""
    return f"stopped by {exc.args[0]}" if exc.args else "interrupted (Ctrl-C)"


class StepLog:
    """Live progress into a run store at most once every ``interval`` seconds: cheap enough for every step.

    ``due()`` says whether a write is wanted now (the caller then gathers the numbers); only transfers whose
    count changed since the last write are written again.
    """

    def __init__(self, store: RunStore, interval: float = 0.5) -> None:
        self.store = store
        self.interval = interval
        self._last = float("-inf")
        self._counts: dict[tuple[str, ...], int] = {}

    def due(self, force: bool = False) -> bool:
        return force or time.monotonic() - self._last >= self.interval

    def write(self, epoch: int, done: int, total: int, train_steps: int, losses: Mapping[str, float],
              flows: Sequence[Mapping[str, Any]], seen: Sequence[str]) -> None:
        self._last = time.monotonic()
        changed = []
        for f in flows:
            key = (f["src"], f["dst"], f["edge"], f["kind"], f["phase"])
            if self._counts.get(key) != f["count"]:
                self._counts[key] = f["count"]
                changed.append(f)
        self.store.log_step(epoch, done, total, train_steps, losses, changed, seen)


def declared_flows(plan: Plan, batch_size: int) -> list[dict[str, Any]]:
    """Every transfer the plan declares, with the bytes of one tensor of a full batch where the plan fixes it.

    Activations and gradients of a cut: batch x the cut's per-sample shape x 4 (float32); labels: batch x the
    label's size; a batch's fingerprint: 32 bytes. Weights and predictions are listed without a size, and so
    are the sites' PSI messages before a joint (vertical) run, whose size depends on the patients.
    """
    rows: list[dict[str, Any]] = []

    def add(edge: str, kind: str, src: str, dst: str, size: int | None) -> None:
        rows.append({"edge": edge, "kind": kind, "src": src, "dst": dst, "bytes": size})

    for e in plan.edges.values():
        size = 4 * batch_size * math.prod(e.shape)
        add(e.name, "activation", e.src_party, e.dst_party, size)
        add(e.name, "gradient", e.dst_party, e.src_party, size)
    for f in plan.label_flows.values():
        shape, dtype = plan.label_spec(plan.tasks[f.task])
        add(f.name, "label", f.src, f.dst, batch_size * math.prod(shape) * dtype.itemsize)
    for p in plan.prediction_flows.values():
        add(p.name, "prediction", p.src, p.dst, None)
    for w in plan.weights_flows.values():
        add(w.name, "weights", w.src, w.dst, None)
    for name, (src, dst) in plan.fingerprint_flows.items():
        add(name, "fingerprint", src, dst, 32)
    sites = list(plan.topology.sites)
    if plan.topology.schedule == "joint" and len(sites) > 1:
        add("psi:*", "psi", "*", "*", None)  # between the sites, before training (private set intersection)
    return rows
