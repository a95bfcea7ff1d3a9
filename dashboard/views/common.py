"""Widgets the sections share: the run picker, run facts and lifecycle, live steps, node status and data reports."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import runs
from dashboard.privacy import count
from dashboard.reports import load_reports

__all__ = ["pick_run", "run_header", "node_table", "report_tables", "step_counter", "fmt_seconds"]

_STATUS_ICON = {"queued": "⏳", "running": "▶️", "stopping": "⏹️", "stopped": "⏹️", "failed": "❌", "completed": "✅"}


def pick_run(root: Path, key: str = "run", label: str = "Run") -> tuple[str, Path] | None:
    """A select box of the run stores under ``root`` (newest first); ``?run=NAME`` preselects one."""
    found = runs.find_runs(root)
    if not found:
        st.info(f"No run stores under `{root}` yet. Start one from **Launch**, or write one with "
                f"`medsplit run EXP.yaml --run-dir {root}/NAME`.")
        return None
    names = list(found)
    if st.session_state.get(key) not in names:
        wanted = st.query_params.get("run")
        st.session_state[key] = wanted if wanted in names else names[0]
    name = st.selectbox(label, names, key=key)
    st.query_params["run"] = name
    return name, found[name]


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_header(run: runs.RunData) -> None:
    """The run's facts and where it is in its lifecycle (queued, running, stopping, stopped, failed, completed),
    with why it ended; a failure's text without paths."""
    info = run.info
    status = str(info.get("status", "unknown"))
    cols = st.columns([3, 2, 2, 2, 2, 2])
    cols[0].metric("Status", f"{_STATUS_ICON.get(status, '')} {status}".strip())
    cols[1].metric("Preset", str(info.get("preset", "?")))
    cols[2].metric("Transport", str(info.get("transport", "?")))
    done = int(run.metrics["epoch"].max()) if not run.metrics.empty else 0
    cols[3].metric("Epochs done", f"{done} / {info.get('epochs', '?')}")
    cols[4].metric("NoPeek α", f"{float(info.get('nopeek') or 0):g}")
    started = info.get("started")
    end = info.get("ended") or (time.time() if runs.is_live(info) else None)
    cols[5].metric("Wall time", f"{float(end) - float(started):.1f} s" if started and end else "–")
    facts = []
    if info.get("reason"):
        facts.append(f"**{status}**: {runs.safe_error(info['reason'])}")
    if info.get("ended"):
        facts.append(f"ended {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(info['ended'])))}")
    if info.get("resumes"):
        facts.append(f"resumed {int(info['resumes'])}×")
    if info.get("stage") and runs.is_live(info):
        facts.append(f"now: {info['stage']}")
    if facts:
        st.caption(" · ".join(facts))
    if status == "failed" and info.get("error"):
        st.error(f"The run failed: {runs.safe_error(info['error'])}")


def step_counter(run: runs.RunData) -> dict | None:
    """The live step counter: epoch, step of the epoch, steps/s, ETA and the latest loss per task."""
    live = runs.live_steps(run)
    if live is None:
        return None
    c = st.columns(5)
    c[0].metric("Epoch", f"{live['epoch']} / {live['epochs']}")
    c[1].metric("Step", f"{live['done']} / {live['total']}", help="training steps done in this epoch")
    c[2].metric("Steps / s", f"{live['rate']:.1f}" if live["rate"] else "–",
                help="over the last 15 s of recorded steps")
    c[3].metric("ETA", fmt_seconds(live["eta"]) if runs.is_live(run.info) else "–",
                help="remaining training steps at that rate (validation not counted)")
    c[4].metric("Loss (latest)", ", ".join(f"{v:.4f}" for v in live["losses"].values()) or "–",
                help=", ".join(live["losses"]) or None)
    return live


def node_table(run: runs.RunData) -> None:
    """Each party's latest status (connected, training, down, resumed, finished, ...), when the run store's writer
    last heard from it, and how often it rejoined after being down."""
    table = runs.node_status(run.events, run.heartbeats)
    if table.empty:
        st.caption("No node has reported a status yet.")
        return
    st.dataframe(table, hide_index=True)


def report_tables(run_dir: Path, info: dict) -> None:
    """Each site's data report, as counts only."""
    counts = load_reports(run_dir, info)
    if not counts:
        return
    st.subheader("Sites' data (counts only)")
    rows = [{"site": c["site"], "found": c["found"], "loaded": c["loaded"], "rejected": c["rejected"],
             "rejected by reason": ", ".join(f"{k} {v}" for k, v in c["rejected by reason"].items()) or "–",
             "split": ", ".join(f"{k} {v}" for k, v in c["split"].items()) or "–",
             "labels": "; ".join(f"{k}: " + ", ".join(f"{c_} {count(n)}" for c_, n in v.items())
                                 for k, v in c["label balance"].items()) or "–",
             "shapes": ", ".join(f"{k} {tuple(v)}" for k, v in c["shapes"].items())} for c in counts]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
