"""Launch: run the stored design as written on synthetic data made for it (said before it starts), without
waiting for it; watch its lifecycle and nodes, stop it, resume it from its checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from dashboard import launcher, runs
from dashboard.settings import REFRESH_SECONDS, Places, check_run_name
from dashboard.views import topology
from dashboard.views.common import node_table, pick_run, report_tables, step_counter
from medsplit.errors import MedsplitError
from medsplit.runstore import FINAL_STATUSES

__all__ = ["render", "TRANSPORTS"]

ss = st.session_state
TRANSPORTS = {"in-process (local transport)": "local", "local processes (gloo on 127.0.0.1)": "gloo"}
_VAL_FRACTION = 0.2  # of each synthetic site's patients held out for validation (`medsplit synth`'s split)


def _form_problems(batch: object, patients: object) -> dict[str, str]:
    """The launch settings' problems, by widget key; nothing is corrected."""
    out = {}
    try:
        check_run_name(str(ss.get("l_name", "")))
    except MedsplitError as exc:
        out["l_name"] = str(exc)
    else:
        if (ss["places"].runs / ss["l_name"]).exists():
            out["l_name"] = f"a run named '{ss['l_name']}' exists already\n  fix: pick another name"
    if not isinstance(patients, int) or patients < 10:
        out["l_patients"] = f"{patients} patients per site is too few\n  fix: give 10 or more"
    elif isinstance(batch, int) and batch > int(patients * (1 - _VAL_FRACTION)):
        out["l_patients"] = (f"a batch of {batch} is more than the {int(patients * (1 - _VAL_FRACTION))} training rows "
                             f"of {patients} synthetic patients per site\n  fix: more patients, or a smaller batch "
                             "(Topology)")
    return out


def _start(plan_args: dict) -> None:
    """Start's on_click: queue the run and start its job; the page goes on at once."""
    name = ss["l_name"]
    try:
        check_run_name(name)
        launcher.start(plan_args["design"], ss["places"].runs / name, transport=TRANSPORTS[ss["l_transport"]],
                       patients=int(ss["l_patients"]), seed=int(ss["l_seed"]))
    except (OSError, MedsplitError) as exc:
        ss["l_msg"] = ("error", f"could not start the run: {runs.safe_error(str(exc))}")
        return
    ss["l_msg"] = ("success", f"queued **{name}**: its data is being written, then it trains; follow it below or "
                              "in Progress")
    ss["run"] = name  # the picker below follows the new run
    ss["l_name"] = ""  # the next run gets a fresh default name


def _start_form(places: Places) -> None:
    draft, verdict = topology.current()
    data = draft.data
    found = data.get("topology")
    topo: dict = found if isinstance(found, dict) else {}
    found = data.get("training")
    training: dict = found if isinstance(found, dict) else {}
    found = data.get("sites")
    sites: list = found if isinstance(found, list) else []
    st.markdown(f"Design **{draft.name}** (experiment `{data.get('experiment')}`): preset `{topo.get('preset')}`, "
                f"{len(sites)} site(s), {training.get('epochs', 5)} epochs, batch {training.get('batch_size', 32)}.")
    if not verdict.ok:
        st.error("The design does not validate; fix it in **Topology** first. `medsplit run` says:")
        st.code(verdict.error, language=None)
        return
    for flag in verdict.flags:
        st.warning(f"Flagged: {flag}", icon=":material/flag:")
    if not ss.get("l_name"):
        ss["l_name"] = f"{data.get('experiment') or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    ss.setdefault("l_patients", 200)
    ss.setdefault("l_seed", int(data.get("seed") or 0) if isinstance(data.get("seed"), int) else 0)
    available = [label for label, t in TRANSPORTS.items() if t in launcher.run_transports()]
    if ss.get("l_transport") not in available:
        ss["l_transport"] = available[0] if available else next(iter(TRANSPORTS))
    problems = _form_problems(training.get("batch_size", 32), ss.get("l_patients"))
    c = st.columns([3, 3, 2, 2])
    c[0].text_input("Run name", key="l_name", help="one folder under the runs folder")
    c[1].radio("Parties run", available or [ss["l_transport"]], key="l_transport",
               help="the transports this install's `medsplit run` accepts")
    c[2].number_input("Patients per site", step=20, key="l_patients")
    c[3].number_input("Data seed", min_value=0, step=1, key="l_seed")
    for i, key in enumerate(("l_name", "l_transport", "l_patients")):
        if key in problems:
            with c[i]:
                st.error(problems[key])
    st.info(launcher.SYNTH_DATA, icon=":material/database:")
    st.button("Start run", type="primary", key="b_start", disabled=bool(problems),
              on_click=_start, args=({"design": data},))
    if "l_msg" in ss:
        kind, msg = ss.pop("l_msg")
        (st.success if kind == "success" else st.error)(msg)


def _has_checkpoints(path: Path) -> bool:
    return any(path.glob("checkpoints/*/step-*.pt"))


def _controls(name: str, path: Path, info: dict) -> None:
    """The process behind the run, Stop while it is live, Resume once it stopped or failed."""
    state = launcher.launch_state(path)
    status = info.get("status")
    if state is None:
        st.caption("Started outside this dashboard (no job recorded here): it cannot be stopped or resumed from the "
                   "page.")
        return
    if state["alive"]:
        launcher.escalate(path)  # Stop's SIGTERM went unanswered for too long: SIGKILL
        st.markdown(f"Process **{state['pid']}** ({state['command']}) is running; output: `{state['log']}`")
        if state["stop_requested"]:
            st.caption(f"Stop requested {time.time() - float(state['stop_requested']):.0f} s ago: the run is "
                       f"recording where it stopped (SIGKILL after {launcher.GRACE_SECONDS:.0f} s).")
        elif st.button("Stop run", key="b_stop"):
            launcher.stop(path)
            st.rerun()
        return
    code = state["returncode"]
    st.markdown(f"Process **{state['pid']}** ({state['command']}) has exited"
                + (f" with status {code}" if code is not None else "") + f"; output: `{state['log']}`")
    if status not in FINAL_STATUSES:
        st.warning(f"The process has exited but the run store says **{status}**: it ended without recording how "
                   "(killed, or the machine stopped). Resume continues it from its checkpoints.")
    if (status in ("stopped", "failed") or status not in FINAL_STATUSES) and (path / launcher.JOB_FILE).exists():
        if _has_checkpoints(path):
            if st.button("Resume run", key="b_resume", type="primary",
                         help="`medsplit run --resume`: from the last checkpoint every party saved"):
                launcher.resume(path)
                st.rerun()
        else:
            st.caption("No checkpoint was saved before it stopped, so it cannot be resumed: start it again.")


def _status(name: str, path: Path) -> None:
    st.subheader(f"Run {name}")
    if not (path / "run.sqlite").exists():
        st.caption("waiting for the run store ...")
        return
    run = runs.load_run(path, name)
    info = run.info
    status = str(info.get("status", "?"))
    line = f"Run status: **{status}**" + (f" ({runs.safe_error(info['reason'])})" if info.get("reason") else "")
    if info.get("stage") and runs.is_live(info):
        line += f" · now: {info['stage']}"
    st.markdown(line)
    if info.get("data"):
        st.caption(f"Data: {info['data']}")
    _controls(name, path, info)
    step_counter(run)
    node_table(run)
    report_tables(path, info)


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


def render(places: Places) -> None:
    """The Launch section."""
    st.header("Launch")
    _start_form(places)
    st.divider()
    picked = pick_run(places.runs, key="run", label="Run to watch")
    if picked is None:
        return
    name, path = picked
    if _active(path):
        _live_status(name, path)
    else:
        _status(name, path)
