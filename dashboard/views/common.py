"""Widgets the sections share: the run picker, run facts, node status and sites' data reports."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import runs
from dashboard.privacy import count
from dashboard.reports import load_reports

__all__ = ["pick_run", "run_header", "node_table", "report_tables"]



def pick_run(root: Path, key: str = "run", label: str = "Run") -> tuple[str, Path] | None:
    """A select box of the run stores under ``root`` (newest first); ``?run=NAME`` preselects one."""
    found = runs.find_runs(root)
    if not found:
        st.info(f"No run stores under `{root}` yet. Start one from **Launch**, or write one with "
                f"`medsplit demo --run-dir {root}/NAME`.")
        return None
    names = list(found)
    if st.session_state.get(key) not in names:
        wanted = st.query_params.get("run")
        st.session_state[key] = wanted if wanted in names else names[0]
    name = st.selectbox(label, names, key=key)
    st.query_params["run"] = name
    return name, found[name]


def run_header(run: runs.RunData) -> None:
    """The run's facts: name, preset, transport, status, epochs, NoPeek, duration; a failure without paths."""
    info = run.info
    status = str(info.get("status", "unknown"))
    cols = st.columns([3, 2, 2, 2, 2, 2])
    cols[0].metric("Status", status)
    cols[1].metric("Preset", str(info.get("preset", "?")))
    cols[2].metric("Transport", str(info.get("transport", "?")))
    done = int(run.metrics["epoch"].max()) if not run.metrics.empty else 0
    cols[3].metric("Epochs", f"{done} / {info.get('epochs', '?')}")
    cols[4].metric("NoPeek α", f"{float(info.get('nopeek') or 0):g}")
    started = info.get("started")
    end = info.get("ended") or (time.time() if runs.is_live(info) else None)
    cols[5].metric("Wall time", f"{float(end) - float(started):.1f} s" if started and end else "–")
    if info.get("error"):
        st.error(f"The run failed: {runs.safe_error(info['error'])}")


def node_table(run: runs.RunData) -> None:
    """Each party's latest status (connected, training, down, resumed, finished, ...), from the run's events."""
    table = runs.node_status(run.events)
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
