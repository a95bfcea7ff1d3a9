"""Launch: start a synthetic-data run of the Topology section's experiment, and watch its nodes' status."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from dashboard import launcher, runs
from dashboard.settings import REFRESH_SECONDS
from dashboard.views import topology
from dashboard.views.common import node_table, pick_run, report_tables

__all__ = ["render", "start"]

ss = st.session_state
TRANSPORTS = {"in-process (local transport)": "local", "local processes (gloo on 127.0.0.1)": "gloo"}


def start(experiment: dict, run_dir: Path, transport: str, patients: int, seed: int) -> launcher.Launch:
    """Write the synthetic cohort and the run's experiment, then start `medsplit run` on them."""
    path = launcher.prepare_synthetic(experiment, run_dir, patients=patients, seed=seed)
    return launcher.launch(launcher.run_argv(path, transport, run_dir), run_dir)


def _start_form(root: Path) -> None:
    experiment, verdict = topology.current()
    topo = experiment.get("topology") or {}
    st.markdown(f"Experiment **{experiment.get('experiment')}**: preset `{topo.get('preset')}`, "
                f"{len(experiment.get('sites') or [])} site(s), {(experiment.get('training') or {}).get('epochs')} "
                "epochs, on a synthetic cohort written for this run (DICOM and EHR files, never shown here).")
    if not verdict.ok:
        st.error("The experiment does not validate; fix it in **Topology** first.")
        st.code(verdict.error, language=None)
        return
    c = st.columns([3, 3, 2, 2])
    if not ss.get("l_name") or (root / ss["l_name"] / "run.sqlite").exists():
        ss["l_name"] = f"{experiment.get('experiment') or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    ss.setdefault("l_patients", 200)
    ss.setdefault("l_seed", int(experiment.get("seed") or 0))
    available = [label for label, t in TRANSPORTS.items() if t in launcher.run_transports()]
    if ss.get("l_transport") not in available:
        ss["l_transport"] = available[0] if available else next(iter(TRANSPORTS))
    c[0].text_input("Run name", key="l_name")
    c[1].radio("Parties run", available or [ss["l_transport"]], key="l_transport",
               help="the transports this install's `medsplit run` accepts")
    c[2].number_input("Patients per site", min_value=20, max_value=5000, step=20, key="l_patients")
    c[3].number_input("Data seed", min_value=0, step=1, key="l_seed")
    if st.button("Start run", type="primary", key="b_start"):
        run_dir = root / ss["l_name"]
        if (run_dir / "run.sqlite").exists():
            st.error(f"{run_dir} already holds a run; pick another name.")
            return
        try:
            with st.spinner("writing the synthetic cohort and starting the run ..."):
                started = start(experiment, run_dir, TRANSPORTS[ss["l_transport"]], int(ss["l_patients"]),
                                int(ss["l_seed"]))
        except Exception as exc:  # noqa: BLE001 - shown to the user, who can fix the experiment or the folder
            st.error(f"could not start the run: {runs.safe_error(str(exc))}")
            return
        with st.spinner("waiting for the run store ..."):
            ready = _wait_for_store(run_dir)
        if ready:
            ss["run"] = ss["l_name"]  # the picker below follows the new run
            st.success(f"started PID {started.pid}; output goes to {started.log}")
        else:
            st.error(f"the run exited before writing its run store; see {started.log}")


def _wait_for_store(run_dir: Path, timeout: float = 120.0) -> bool:
    """Until the run store exists (True) or the process has exited without one (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "run.sqlite").exists():
            return True
        state = launcher.launch_state(run_dir)
        if not (state and state["alive"]):
            return (run_dir / "run.sqlite").exists()
        time.sleep(0.2)
    return False


def _process(run_dir: Path) -> None:
    state = launcher.launch_state(run_dir)
    if state is None:
        st.caption("Started outside this dashboard (no PID recorded here).")
        return
    if state["alive"]:
        st.markdown(f"Process **{state['pid']}** (`{state['command']}`) is running; output: `{state['log']}`")
        if st.button("Stop run", key="b_stop"):
            launcher.stop(run_dir)
            st.rerun()
    else:
        code = state["returncode"]
        st.markdown(f"Process **{state['pid']}** (`{state['command']}`) has exited"
                    + (f" with status {code}" if code is not None else "") + f"; output: `{state['log']}`")


def _status(name: str, path: Path) -> None:
    st.subheader(f"Nodes of {name}")
    _process(path)
    if (path / "run.sqlite").exists():
        run = runs.load_run(path, name)
        st.markdown(f"Run status: **{run.info.get('status', 'starting')}**")
        node_table(run)
        report_tables(path, run.info)
    else:
        st.caption("waiting for the run store ...")


def _active(path: Path) -> bool:
    state = launcher.launch_state(path)
    if state and state["alive"]:
        return True
    return (path / "run.sqlite").exists() and runs.is_live(runs.load_run(path).info) and state is None


@st.fragment(run_every=REFRESH_SECONDS)
def _live_status(name: str, path: Path) -> None:
    _status(name, path)
    if not _active(path):
        st.rerun()  # finished: one full rerun drops the refresh timer


def render(root: Path) -> None:
    """The Launch section."""
    st.header("Launch")
    _start_form(root)
    st.divider()
    picked = pick_run(root, key="run", label="Run to watch")
    if picked is None:
        return
    name, path = picked
    if _active(path):
        _live_status(name, path)
    else:
        _status(name, path)
