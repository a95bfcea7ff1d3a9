"""Read run stores and shape their aggregates for charts: curves, throughput, bytes, FLOPs, dCor, node status."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medsplit.runstore import RUNSTORE_FILE, RunStore

__all__ = ["RunData", "find_runs", "load_run", "is_live", "curves", "steps_per_second", "bytes_over_time",
           "bytes_by_kind", "flops", "dcor", "node_status", "final_row", "safe_error", "INFO_KEYS", "roles"]

#: the run-level facts the dashboard shows; anything else in the store's ``run`` table is left out
INFO_KEYS = ("name", "preset", "transport", "status", "epochs", "seed", "nopeek", "started", "ended")
_TABLES = ("metrics", "traffic", "timings", "events", "audit", "privacy")


@dataclass
class RunData:
    """One run store read at one moment: its facts and its tables as DataFrames (aggregates only)."""

    name: str
    path: Path
    info: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getattr__(self, table: str) -> pd.DataFrame:
        if table in _TABLES:
            return self.tables.get(table, pd.DataFrame())
        raise AttributeError(table)


def find_runs(root: str | Path) -> dict[str, Path]:
    """Run directories under ``root`` (itself, children and grandchildren holding run.sqlite), newest first."""
    root = Path(root)
    if not root.is_dir():
        return {}
    stores = [root / RUNSTORE_FILE] + list(root.glob(f"*/{RUNSTORE_FILE}")) + list(root.glob(f"*/*/{RUNSTORE_FILE}"))
    found = sorted((p for p in stores if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    return {(p.parent.relative_to(root).as_posix() if p.parent != root else root.name): p.parent for p in found}


def load_run(path: str | Path, name: str | None = None) -> RunData:
    """Every table of the run store at ``path``, read-only (a live run keeps writing meanwhile)."""
    store = RunStore(path, readonly=True)
    try:
        info = store.info()
        tables = {t: store.frame(t) for t in _TABLES}
    finally:
        store.close()
    return RunData(name or info.get("name") or Path(path).name, Path(path), info, tables)


def is_live(info: dict[str, Any]) -> bool:
    return info.get("status") == "running" and not info.get("ended")


def safe_error(text: str | None) -> str | None:
    """A run's error without file paths: folder names at a site can hold patient identifiers."""
    if not text:
        return text
    return re.sub(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\",:;()\[\]]+){2,}", "<path>", str(text))


def roles(info: dict[str, Any]) -> dict[str, str]:
    """Party -> role (site, server, hop), from the topology description the run recorded."""
    return {p: r for r, p in re.findall(r"\[(site|server|hop)\] ([^:\s]+):", str(info.get("topology", "")))}


def curves(metrics: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task, one row per epoch and one column per 'split name' (train loss, val loss, val auc, ...)."""
    if metrics.empty:
        return {}
    out = {}
    for task, df in metrics.groupby("task", sort=True):
        df = df.assign(series=df["split"] + " " + df["name"])
        wide = df.pivot_table(index="epoch", columns="series", values="value", aggfunc="last")
        out[str(task)] = wide.reset_index().rename_axis(columns=None)
    return out


def steps_per_second(metrics: pd.DataFrame, info: dict[str, Any]) -> pd.DataFrame:
    """Training steps per wall-clock second, per epoch (from when each epoch's metrics were written)."""
    if metrics.empty:
        return pd.DataFrame(columns=["epoch", "steps/s"])
    ends = metrics.groupby("epoch").agg(step=("step", "max"), ts=("ts", "min")).sort_index()
    prev_ts = ends["ts"].shift(1)
    prev_ts.iloc[0] = info.get("started", float("nan"))
    prev_step = ends["step"].shift(1).fillna(0)
    rate = (ends["step"] - prev_step) / (ends["ts"] - prev_ts)
    return pd.DataFrame({"epoch": ends.index, "steps/s": rate.round(2).to_numpy()})


def bytes_over_time(traffic: pd.DataFrame, info: dict[str, Any]) -> pd.DataFrame:
    """Cumulative MB per 'party direction' against seconds since the run started (summed over kinds)."""
    if traffic.empty:
        return pd.DataFrame(columns=["seconds"])
    t0 = info.get("started") or traffic["ts"].min()
    df = traffic.assign(series=traffic["party"] + " " + traffic["direction"])
    wide = df.pivot_table(index="step", columns="series", values="bytes", aggfunc="sum") / 1e6
    seconds = (df.groupby("step")["ts"].min() - t0).round(2)
    wide = wide.ffill().fillna(0).rename_axis(columns=None)
    wide.insert(0, "seconds", seconds.reindex(wide.index).to_numpy())
    return wide.reset_index(drop=True)


def bytes_by_kind(traffic: pd.DataFrame) -> pd.DataFrame:
    """The latest cumulative bytes per party, direction and kind."""
    if traffic.empty:
        return pd.DataFrame(columns=["party", "direction", "kind", "MB"])
    last = traffic[traffic["step"] == traffic["step"].max()]
    last = last.sort_values("ts").groupby(["party", "direction", "kind"], as_index=False)["bytes"].last()
    return last.assign(MB=(last["bytes"] / 1e6).round(3)).drop(columns="bytes")


def flops(timings: pd.DataFrame, info: dict[str, Any]) -> pd.DataFrame:
    """FLOPs per training step per party and per epoch, marking the clients (site parties)."""
    if timings.empty:
        return pd.DataFrame(columns=["party", "role", "MFLOP / step", "GFLOP / epoch"])
    last = timings.sort_values("ts").groupby("party", as_index=False).last()
    role = roles(info)
    return pd.DataFrame({"party": last["party"], "role": [role.get(p, "") for p in last["party"]],
                         "MFLOP / step": (last["flops_per_step"] / 1e6).round(2),
                         "GFLOP / epoch": (last["flops_per_step"] * last["steps"] / 1e9).round(3)})


def dcor(privacy: pd.DataFrame) -> pd.DataFrame:
    """Distance correlation of each site's cut with its raw input, per epoch (NoPeek lowers it)."""
    if privacy.empty:
        return pd.DataFrame(columns=["epoch"])
    wide = privacy.pivot_table(index="epoch", columns="segment", values="dcor", aggfunc="last")
    return wide.reset_index().rename_axis(columns=None)


def node_status(events: pd.DataFrame, now: float | None = None) -> pd.DataFrame:
    """The latest status of each party, with how long ago it changed."""
    if events.empty:
        return pd.DataFrame(columns=["party", "status", "since", "detail"])
    now = now or time.time()
    last = events.sort_values("ts").groupby("party", as_index=False).last()
    return pd.DataFrame({"party": last["party"], "status": last["status"],
                         "since": [_ago(now - ts) for ts in last["ts"]],
                         "detail": [safe_error(d) or "" for d in last["detail"]]})


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def final_row(run: RunData) -> dict[str, Any]:
    """One row of the comparison table: the run's facts and its last epoch's metrics."""
    info = run.info
    row: dict[str, Any] = {"run": run.name, "preset": info.get("preset"), "transport": info.get("transport"),
                           "nopeek": info.get("nopeek"), "status": info.get("status")}
    m = run.metrics
    if not m.empty:
        row["epochs"] = int(m["epoch"].max())
        last = m[m["epoch"] == m["epoch"].max()].sort_values("ts")
        for (task, split, name), value in last.groupby(["task", "split", "name"])["value"].last().items():
            row[f"{task} {split} {name}"] = round(float(value), 4)
    t = run.traffic
    if not t.empty:
        sent = t[(t["direction"] == "sent") & (t["step"] == t["step"].max())]
        row["MB sent (all parties)"] = round(float(sent["bytes"].sum()) / 1e6, 3)
    f = flops(run.timings, info)
    clients = f[f["role"] == "site"] if (f["role"] == "site").any() else f
    if not clients.empty:
        row["client MFLOP / step"] = round(float(clients["MFLOP / step"].max()), 2)
    d = dcor(run.privacy)
    if len(d.columns) > 1:
        row["dCor (last, max over cuts)"] = round(float(d.drop(columns="epoch").iloc[-1].max()), 3)
    if info.get("started") and info.get("ended"):
        row["seconds"] = round(float(info["ended"]) - float(info["started"]), 1)
    return row
