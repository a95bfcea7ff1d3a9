"""The run store: one SQLite database (WAL) per run, written by the server, read live by the dashboard.

It holds aggregates only: the run's config, metrics per epoch (and step) per task, bytes and timings per
party, node status events, the audit summary and NoPeek's dCor. Never raw data, patient IDs or
per-patient outputs.

Tables:
    run(key, value)                                   config, status, name, preset, transport, started/ended
    metrics(ts, epoch, step, task, split, name, value) split: train|val; name: loss|auc|acc|mse
    traffic(ts, epoch, step, party, direction, kind, bytes)   cumulative bytes at that point
    timings(ts, epoch, party, steps, seconds, flops_per_step) per epoch
    events(ts, party, status, detail)                 status: connected|training|down|resumed|finished|refused|failed
    audit(src, dst, edge, kind, count, bytes, shapes, dtypes)  the run's audit summary (latest)
    privacy(ts, epoch, segment, dcor)                 distance correlation of a site's cut with its raw input
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .errors import ConfigError

if TYPE_CHECKING:
    from .engine.report import EpochRecord

__all__ = ["RunStore", "STATUSES", "RUNSTORE_FILE"]

RUNSTORE_FILE = "run.sqlite"
STATUSES = ("connected", "training", "down", "resumed", "finished", "refused", "failed")

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

    def set_audit(self, rows: list[dict]) -> None:
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
        if table not in ("metrics", "traffic", "timings", "events", "audit", "privacy"):
            raise ConfigError(f"the run store has no table '{table}'",
                              hint="tables: metrics, traffic, timings, events, audit, privacy")
        cur = self._db.execute(f"SELECT * FROM {table}")  # noqa: S608 - table name checked above
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def frame(self, table: str):
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

