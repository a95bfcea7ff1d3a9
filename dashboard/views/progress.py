"""Progress: one run, live step by step (counter, steps/s, ETA, smoothed loss, each transfer against the plan)
and per epoch (curves per task, steps/s, FLOPs, bytes per transfer, dCor); refreshed while the run is live."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import runs
from dashboard.charts import bars, lines
from dashboard.settings import REFRESH_SECONDS, Places
from dashboard.views.common import node_table, pick_run, report_tables, run_header, step_counter

__all__ = ["render", "run_body"]


def _live_steps(run: runs.RunData) -> None:
    st.subheader("Steps")
    live = step_counter(run)
    if live is None:
        status = run.info.get("status")
        st.caption("No training step recorded yet" + (f" ({status}: {run.info.get('stage')})"
                                                      if run.info.get("stage") else f" ({status})."))
        return
    table, undeclared = runs.transfers(run)
    if not undeclared.empty:
        st.error("A kind of tensor the plan does not declare crossed: "
                 + "; ".join(f"{r.kind} {r.transfer} on '{r.edge}'" for r in undeclared.itertuples())
                 + ". The wire refuses undeclared tensors; check the audit and the parties' logs.",
                 icon=":material/gpp_maybe:")
    losses = runs.loss_per_step(run)
    if not losses.empty:
        wide = losses.pivot_table(index="step", columns="task", values="smoothed").reset_index()
        wide.columns = ["step", *[f"{t} (smoothed)" for t in wide.columns[1:]]]
        st.caption("training loss per step, smoothed (exponential moving average)")
        st.altair_chart(lines(wide, "step", list(wide.columns[1:]), x_title="training step", y_title="loss",
                              points=False, height=200), width="stretch")
    if not table.empty:
        st.caption("each transfer so far against the plan (kB per tensor of a full batch; an epoch's last batch "
                   "is smaller)")
        st.dataframe(table, hide_index=True, width="stretch")


def _task_charts(run: runs.RunData) -> None:
    per_task = runs.curves(run.metrics)
    if not per_task:
        st.caption("Per-epoch curves appear when the first epoch has been validated; the steps above are live.")
        return
    for task, wide in per_task.items():
        st.subheader(f"Task: {task}")
        losses = [c for c in wide.columns if c.endswith(" loss")]
        scores = [c for c in wide.columns if c != "epoch" and c not in losses]
        left, right = st.columns(2)
        with left:
            st.caption("loss per epoch: train (solid) and validation (dashed)")
            st.altair_chart(lines(wide, "epoch", losses, x_title="epoch", y_title="loss"), width="stretch")
        with right:
            if scores:
                st.caption(", ".join(scores) + " per epoch")
                st.altair_chart(lines(wide, "epoch", scores, x_title="epoch", y_title="score"),
                                width="stretch")
        last = wide.iloc[-1]
        cols = st.columns(max(1, len(wide.columns) - 1))
        for col, name in zip(cols, [c for c in wide.columns if c != "epoch"], strict=False):
            prev = wide[name].iloc[-2] if len(wide) > 1 else None
            delta = None if prev is None else f"{last[name] - prev:+.4f}"
            col.metric(name, f"{last[name]:.4f}", delta, delta_color="inverse" if name.endswith("loss") else "normal")


def _system_charts(run: runs.RunData) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Steps per second")
        sps = runs.steps_per_second(run.metrics, run.info)
        if sps.empty:
            st.caption("per epoch, after the first one")
        else:
            st.altair_chart(bars(sps, "epoch", "steps/s", x_title="epoch", y_title="training steps / s"),
                            width="stretch")
    with right:
        st.subheader("Client FLOPs")
        fl = runs.flops(run.timings, run.info)
        if fl.empty:
            st.caption("after the first epoch")
        else:
            clients = fl[fl["role"] == "site"] if (fl["role"] == "site").any() else fl
            st.altair_chart(bars(clients, "party", "MFLOP / step", x_title="client (site)",
                                 y_title="MFLOP per training step"), width="stretch")
            st.dataframe(fl, hide_index=True)
    st.subheader("Bytes per transfer")
    over_time = runs.bytes_over_time(run)
    if len(over_time.columns) > 1:
        st.caption("cumulative MB of each transfer (sender → receiver, kind), each tensor counted once")
        st.altair_chart(lines(over_time, "seconds", [c for c in over_time.columns if c != "seconds"],
                              x_title="seconds since start", y_title="MB (cumulative)", points=False, height=300),
                        width="stretch")
        with st.expander("By party, direction and kind (last epoch)"):
            st.dataframe(runs.bytes_by_kind(run.traffic), hide_index=True)
    else:
        st.caption("no tensor has crossed yet")
    d = runs.dcor(run.privacy)
    if len(d.columns) > 1:
        alpha = float(run.info.get("nopeek") or 0)
        st.subheader("Distance correlation of each cut with its raw input" + (f" (NoPeek α = {alpha:g})" if alpha
                                                                              else " (NoPeek off)"))
        st.altair_chart(lines(d, "epoch", [c for c in d.columns if c != "epoch"], x_title="epoch", y_title="dCor"),
                        width="stretch")
    if not run.audit.empty:
        with st.expander("Audit: every kind of tensor that crossed a party boundary"):
            st.dataframe(run.audit[["src", "dst", "edge", "kind", "count", "bytes"]], hide_index=True)


def run_body(name: str, path: Path) -> None:
    """Everything about one run, read from its store now."""
    run = runs.load_run(path, name)
    run_header(run)
    _live_steps(run)
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


def render(places: Places) -> None:
    """The Progress section."""
    st.header("Progress")
    picked = pick_run(places.runs)
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
