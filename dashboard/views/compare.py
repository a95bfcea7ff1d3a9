"""Compare: several runs' curves overlaid (a colour and marker per run: a one-epoch run is a visible point), and a
table of their final metrics and how each ended."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import runs
from dashboard.charts import lines
from dashboard.settings import Places
from dashboard.views.privacy import compare_chart

__all__ = ["render", "overlay"]


def overlay(loaded: list[runs.RunData], task: str, series: str) -> pd.DataFrame:
    """One column per run of ``series`` ('val auc', 'train loss', ...) for ``task``, by epoch."""
    frames = []
    for run in loaded:
        wide = runs.curves(run.metrics).get(task)
        if wide is not None and series in wide.columns:
            frames.append(wide.set_index("epoch")[series].rename(run.name))
    return pd.concat(frames, axis=1).reset_index() if frames else pd.DataFrame(columns=["epoch"])


def render(places: Places) -> None:
    """The Compare section."""
    st.header("Compare runs")
    found = runs.find_runs(places.runs)
    if not found:
        st.info(f"No run stores under `{places.runs}` yet.")
        return
    if "c_runs" in st.session_state:  # runs can disappear between reruns
        st.session_state["c_runs"] = [n for n in st.session_state["c_runs"] if n in found]
    else:
        st.session_state["c_runs"] = list(found)[:3]
    st.multiselect("Runs", list(found), key="c_runs")
    chosen = st.session_state.get("c_runs") or []
    if not chosen:
        st.caption("Pick one or more runs.")
        return
    loaded = [runs.load_run(found[n], n) for n in chosen if n in found]
    pairs = sorted({(t, c) for r in loaded for t, w in runs.curves(r.metrics).items() for c in w.columns
                    if c != "epoch"})
    if pairs:
        tasks = sorted({t for t, _ in pairs})
        c = st.columns(2)
        if st.session_state.get("c_task") not in tasks:
            st.session_state["c_task"] = tasks[0]
        task = c[0].selectbox("Task", tasks, key="c_task")
        options = [s for t, s in pairs if t == task]
        if st.session_state.get("c_series") not in options:
            st.session_state["c_series"] = "val auc" if "val auc" in options else options[0]
        series = c[1].selectbox("Curve", options, key="c_series")
        wide = overlay(loaded, task, series)
        st.altair_chart(lines(wide, "epoch", [c for c in wide.columns if c != "epoch"], x_title="epoch",
                              y_title=f"{task} {series}"), width="stretch")
        loss = overlay(loaded, task, "val loss")
        if series != "val loss" and len(loss.columns) > 1:
            st.caption(f"{task} val loss")
            st.altair_chart(lines(loss, "epoch", [c for c in loss.columns if c != "epoch"], x_title="epoch",
                                  y_title="val loss"), width="stretch")
    st.subheader("Final metrics")
    st.dataframe(pd.DataFrame([runs.final_row(r) for r in loaded]), hide_index=True)
    compare_chart(loaded)
