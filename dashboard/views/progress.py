"""Progress: one run's curves per task, steps/s, bytes per site and direction, FLOPs and dCor; live refresh."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import runs
from dashboard.settings import REFRESH_SECONDS
from dashboard.views.common import node_table, pick_run, report_tables, run_header

__all__ = ["render", "run_body"]


def _task_charts(run: runs.RunData) -> None:
    per_task = runs.curves(run.metrics)
    if not per_task:
        st.info("No epoch has finished yet: curves appear after the first one.")
        return
    for task, wide in per_task.items():
        st.subheader(f"Task: {task}")
        losses = [c for c in wide.columns if c.endswith(" loss")]
        scores = [c for c in wide.columns if c != "epoch" and c not in losses]
        left, right = st.columns(2)
        with left:
            st.caption("loss (train and validation) per epoch")
            st.line_chart(wide, x="epoch", y=losses, x_label="epoch", y_label="loss")
        with right:
            if scores:
                st.caption(", ".join(scores) + " per epoch")
                st.line_chart(wide, x="epoch", y=scores, x_label="epoch", y_label="score")
        last = wide.iloc[-1]
        cols = st.columns(max(1, len(wide.columns) - 1))
        for col, name in zip(cols, [c for c in wide.columns if c != "epoch"]):
            prev = wide[name].iloc[-2] if len(wide) > 1 else None
            delta = None if prev is None else f"{last[name] - prev:+.4f}"
            col.metric(name, f"{last[name]:.4f}", delta, delta_color="inverse" if name.endswith("loss") else "normal")


def _system_charts(run: runs.RunData) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Steps per second")
        sps = runs.steps_per_second(run.metrics, run.info)
        if sps.empty:
            st.caption("after the first epoch")
        else:
            st.bar_chart(sps, x="epoch", y="steps/s", x_label="epoch", y_label="training steps / s")
    with right:
        st.subheader("Client FLOPs")
        fl = runs.flops(run.timings, run.info)
        if fl.empty:
            st.caption("after the first epoch")
        else:
            clients = fl[fl["role"] == "site"] if (fl["role"] == "site").any() else fl
            st.bar_chart(clients, x="party", y="MFLOP / step", x_label="client (site)",
                         y_label="MFLOP per training step")
            st.dataframe(fl, hide_index=True)
    st.subheader("Bytes sent and received per party")
    over_time = runs.bytes_over_time(run.traffic, run.info)
    if len(over_time.columns) > 1:
        st.line_chart(over_time, x="seconds", y=[c for c in over_time.columns if c != "seconds"],
                      x_label="seconds since start", y_label="MB (cumulative)")
        with st.expander("By kind (latest)"):
            st.dataframe(runs.bytes_by_kind(run.traffic), hide_index=True)
    else:
        st.caption("nothing has crossed yet")
    d = runs.dcor(run.privacy)
    if len(d.columns) > 1:
        alpha = float(run.info.get("nopeek") or 0)
        st.subheader("Distance correlation of each cut with its raw input" + (f" (NoPeek α = {alpha:g})" if alpha
                                                                              else " (NoPeek off)"))
        st.line_chart(d, x="epoch", y=[c for c in d.columns if c != "epoch"], x_label="epoch", y_label="dCor")
    if not run.audit.empty:
        with st.expander("Audit: every kind of tensor that crossed a party boundary"):
            st.dataframe(run.audit[["src", "dst", "edge", "kind", "count", "bytes"]], hide_index=True)


def run_body(name: str, path: Path) -> None:
    """Everything about one run, read from its store now."""
    run = runs.load_run(path, name)
    run_header(run)
    _task_charts(run)
    _system_charts(run)
    st.subheader("Nodes")
    node_table(run)
    report_tables(path, run.info)
    if not runs.is_live(run.info) and st.session_state.get("p_live"):
        st.session_state["p_live"] = False
        st.rerun()  # the run ended: one full rerun drops the refresh timer


@st.fragment(run_every=REFRESH_SECONDS)
def _live(name: str, path: Path) -> None:
    run_body(name, path)


def render(root: Path) -> None:
    """The Progress section."""
    st.header("Progress")
    picked = pick_run(root)
    if picked is None:
        return
    name, path = picked
    live = runs.is_live(runs.load_run(path, name).info)
    st.session_state.setdefault("p_auto", True)
    auto = st.sidebar.toggle("Refresh while live", key="p_auto")
    st.session_state["p_live"] = live and auto
    if live and auto:
        st.caption(f"live: re-read every {REFRESH_SECONDS:g} s")
        _live(name, path)
    else:
        run_body(name, path)
