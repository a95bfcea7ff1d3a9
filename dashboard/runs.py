"""Read run stores and shape their aggregates for charts: curves, live steps, transfers against the plan,
throughput, bytes, FLOPs, dCor, node status with heartbeats and rejoins."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medsplit.runstore import RUNSTORE_FILE, RunStore

__all__ = ["RunData", "find_runs", "load_run", "is_live", "curves", "steps_per_second", "bytes_over_time",
           "bytes_by_kind", "flops", "dcor", "node_status", "final_row", "safe_error", "INFO_KEYS", "roles",
           "live_steps", "loss_per_step", "transfers", "LIVE"]

#: the run-level facts the dashboard shows; anything else in the store's ``run`` table is left out
INFO_KEYS = ("name", "preset", "transport", "status", "reason", "epochs", "seed", "nopeek", "started", "ended",
             "resumes")
#: statuses of a run that is not over (RUN_STATUSES in the run store)
LIVE = ("queued", "running", "stopping")
_TABLES = ("metrics", "traffic", "timings", "events", "audit", "privacy", "steps", "flows", "heartbeats")
_SMOOTHING = 0.3  # weight of the newest loss in the smoothed per-step curve (an exponential moving average)
_RATE_WINDOW = 15.0  # seconds of step records that steps/s and the ETA are measured over


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
    """Queued, running or stopping: the run is not over, so its pages keep re-reading the store."""
    return info.get("status") in LIVE


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


def bytes_over_time(run: RunData) -> pd.DataFrame:
    """Cumulative MB per transfer ('src → dst kind') against seconds since the run started: each tensor once.

    From the live ``flows`` table; a store written before it existed gives each party's sent bytes (every
    transfer is sent by exactly one party, so nothing is counted twice either).
    """
    t0 = run.info.get("started")
    flows = run.flows
    if not flows.empty:  # a row is written when its count changed: carry each (transfer, phase) forward, then sum
        df = flows.assign(series=flows["src"] + " → " + flows["dst"] + " " + flows["kind"],
                          part=flows["edge"] + "|" + flows["phase"])
    elif not run.traffic.empty:
        sent = run.traffic[run.traffic["direction"] == "sent"]
        df = sent.assign(series=sent["party"] + " sent", part=sent["kind"])
    else:
        return pd.DataFrame(columns=["seconds"])
    parts = df.pivot_table(index="ts", columns=["series", "part"], values="bytes", aggfunc="last")
    wide = parts.sort_index().ffill().fillna(0).T.groupby(level="series").sum().T
    wide = (wide / 1e6).rename_axis(columns=None)
    wide.insert(0, "seconds", (wide.index - (t0 or wide.index.min())).round(2))
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


def node_status(events: pd.DataFrame, heartbeats: pd.DataFrame | None = None, now: float | None = None
                ) -> pd.DataFrame:
    """Each party's latest status with how long ago it changed, when it was last heard from, and how many times
    it came back after being down (``resumed`` events)."""
    if events.empty:
        return pd.DataFrame(columns=["party", "status", "since", "last heard", "rejoins", "detail"])
    now = now or time.time()
    last = events.sort_values("ts").groupby("party", as_index=False).last()
    rejoins = events[events["status"] == "resumed"].groupby("party").size()
    heard = {} if heartbeats is None or heartbeats.empty else \
        dict(zip(heartbeats["party"], heartbeats["ts"], strict=True))
    return pd.DataFrame({"party": last["party"], "status": last["status"],
                         "since": [_ago(now - ts) for ts in last["ts"]],
                         "last heard": [_ago(now - heard[p]) if p in heard else "–" for p in last["party"]],
                         "rejoins": [int(rejoins.get(p, 0)) for p in last["party"]],
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
    if info.get("reason"):
        row["why"] = safe_error(info["reason"])
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


def live_steps(run: RunData, now: float | None = None) -> dict[str, Any] | None:
    """Where a run is, step by step: epoch, steps done of the epoch, of the run, steps/s and the ETA."""
    steps = run.steps
    if steps.empty:
        return None
    steps = steps.sort_values("ts")
    last = steps.iloc[-1]
    epochs = int(run.info.get("epochs") or last["epoch"])
    total = int(last["total"])
    recent = steps[steps["ts"] >= last["ts"] - _RATE_WINDOW]
    first = recent.iloc[0]
    span = float(last["ts"] - first["ts"])
    rate = float(last["train_steps"] - first["train_steps"]) / span if span > 0 else None
    left = max(0, epochs * total - int(last["train_steps"]))
    return {"epoch": int(last["epoch"]), "epochs": epochs, "done": int(last["done"]), "total": total,
            "train_steps": int(last["train_steps"]), "of": epochs * total, "rate": rate,
            "eta": left / rate if rate else None, "age": (now or time.time()) - float(last["ts"]),
            "losses": json.loads(last["losses"] or "{}")}


def loss_per_step(run: RunData) -> pd.DataFrame:
    """The latest training loss per task at each recorded step, and its exponential moving average."""
    steps = run.steps
    if steps.empty:
        return pd.DataFrame(columns=["step", "task", "loss", "smoothed"])
    rows = [(int(r.train_steps), task, float(v)) for r in steps.sort_values("ts").itertuples()
            for task, v in json.loads(r.losses or "{}").items()]
    df = pd.DataFrame(rows, columns=["step", "task", "loss"])
    df["smoothed"] = df.groupby("task")["loss"].transform(lambda x: x.ewm(alpha=_SMOOTHING).mean())
    return df


def _declared(declared: list[dict], src: str, dst: str, edge: str, kind: str) -> int | None:
    """The index of the plan's row for a transfer (PSI is declared between any two sites, by kind)."""
    for i, d in enumerate(declared):
        if d["kind"] == kind and (d["edge"], d["src"], d["dst"]) in ((edge, src, dst), ("psi:*", "*", "*")):
            return i
    return None


def transfers(run: RunData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each transfer so far against the plan: (table, undeclared). The table has one row per declared or measured
    (src, dst, edge, kind): tensors, MB, kB per tensor measured and as the plan says for a full batch, and a
    verdict; ``undeclared`` holds the measured transfers of a kind the plan does not declare there."""
    declared = [d for d in run.info.get("declared") or [] if isinstance(d, dict)]
    measured: dict[tuple[str, str, str, str], tuple[int, int]] = {}
    if not run.flows.empty:
        latest = run.flows.sort_values("ts").groupby(["src", "dst", "edge", "kind", "phase"], as_index=False).last()
        for key, g in latest.groupby(["src", "dst", "edge", "kind"]):
            measured[key] = (int(g["count"].sum()), int(g["bytes"].sum()))
    rows, undeclared, matched = [], [], set()
    for (src, dst, edge, kind), (count, size) in sorted(measured.items()):
        i = _declared(declared, src, dst, edge, kind)
        per = size / count / 1e3 if count else 0.0
        planned = declared[i].get("bytes") if i is not None else None
        if i is None:
            undeclared.append({"transfer": f"{src} → {dst}", "kind": kind, "edge": edge})
            verdict = "NOT DECLARED by the plan"
        else:
            matched.add(i)
            verdict = "declared" if planned is None else \
                "as planned" if per <= planned / 1e3 * 1.001 else "LARGER than the plan"
        rows.append({"transfer": f"{src} → {dst}", "kind": kind, "edge": edge, "tensors": count,
                     "MB": round(size / 1e6, 3), "kB / tensor": round(per, 2),
                     "plan kB / tensor": None if planned is None else round(planned / 1e3, 2), "verdict": verdict})
    for i, d in enumerate(declared):  # what the plan says crosses, not (yet) seen by the store's writer
        if i not in matched and d.get("bytes") is not None and d["kind"] in ("activation", "gradient", "label"):
            rows.append({"transfer": f"{d['src']} → {d['dst']}", "kind": d["kind"], "edge": d["edge"],
                         "tensors": 0, "MB": 0.0, "kB / tensor": None, "plan kB / tensor": round(d["bytes"] / 1e3, 2),
                         "verdict": "not measured yet"})
    return pd.DataFrame(rows), pd.DataFrame(undeclared, columns=["transfer", "kind", "edge"])
