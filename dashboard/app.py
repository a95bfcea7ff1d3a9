"""The dashboard's entry point (`medsplit dashboard` runs `streamlit run dashboard/app.py`): sidebar and sections."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # streamlit puts this script's folder on sys.path, not the checkout's
    sys.path.insert(0, _ROOT)

import streamlit as st

from dashboard.settings import runs_root
from dashboard.views import compare, launch, privacy, progress, topology

SECTIONS = {"Topology": topology.render, "Launch": launch.render, "Progress": progress.render,
            "Compare": compare.render, "Privacy": privacy.render}
_KEEP = ("t_", "c_", "l_", "p_", "run")  # widget keys that outlive their section; buttons are "b_*"
_PRIVACY = ("Reads run stores only: metrics, bytes, timings and node status. No images, no per-patient rows, "
            "no patient IDs; a site's data report appears as counts, small counts as <10. Images appear only in "
            "privacy report cards, which run on synthetic patients.")

st.set_page_config(page_title="medsplit", page_icon=":material/hub:", layout="wide")
state = st.session_state
for key in [k for k in state if str(k).startswith(_KEEP)]:
    state[key] = state[key]  # keeps a section's widget values while another section is shown
if "goto" in state:  # set by a section before a rerun, e.g. Launch -> Progress
    state["section"] = state.pop("goto")
if "section" not in state:
    wanted = str(st.query_params.get("page", "")).capitalize()
    state["section"] = wanted if wanted in SECTIONS else "Topology"
if "runs_root" not in state:
    state["runs_root"] = str(runs_root())

st.sidebar.title("medsplit")
section = st.sidebar.radio("Section", list(SECTIONS), key="section")
root = Path(st.sidebar.text_input("Runs folder", key="runs_root")).expanduser()
st.sidebar.caption(_PRIVACY)
st.query_params["page"] = section.lower()
SECTIONS[section](root)
