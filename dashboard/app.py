"""The dashboard's entry point (`medsplit dashboard` runs `streamlit run dashboard/app.py`): sidebar and sections."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # streamlit puts this script's folder on sys.path, not the checkout's
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402 - after the checkout is on sys.path
from PIL import Image, ImageDraw  # noqa: E402

from dashboard.settings import Places, confined, places  # noqa: E402
from dashboard.views import compare, launch, privacy, progress, topology  # noqa: E402
from medsplit.errors import MedsplitError  # noqa: E402

SECTIONS = {"Topology": topology.render, "Launch": launch.render, "Progress": progress.render,
            "Compare": compare.render, "Privacy": privacy.render}
_KEEP = ("t_", "c_", "l_", "p_", "run")  # widget keys that outlive their section; buttons are "b_*"
_PRIVACY = ("Reads run stores only: metrics, bytes, timings and node status. No images, no per-patient rows, "
            "no patient IDs; a site's data report appears as counts, small counts as <10. Images appear only in "
            "privacy report cards, which run on synthetic patients.")


def _icon() -> Image.Image:
    """The page icon, drawn here: an icon font or emoji would be fetched from a CDN on every load."""
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for x, y in ((12, 14), (12, 50), (52, 32)):
        draw.line((x, y, 32, 32), fill="#2f6db5", width=5)
        draw.ellipse((x - 8, y - 8, x + 8, y + 8), fill="#2f6db5")
    draw.ellipse((22, 22, 42, 42), fill="#c97a1e")
    return img


st.set_page_config(page_title="medsplit", page_icon=_icon(), layout="wide")
state = st.session_state
for key in [k for k in state if str(k).startswith(_KEEP)]:
    state[key] = state[key]  # keeps a section's widget values while another section is shown
if "goto" in state:  # set by a section before a rerun, e.g. Launch -> Progress
    state["section"] = state.pop("goto")
if "section" not in state:
    wanted = str(st.query_params.get("page", "")).capitalize()
    state["section"] = wanted if wanted in SECTIONS else "Topology"
if "home" not in state:
    state["home"] = places()  # from the command line: everything the page reads or writes lies under its root
    state["runs_folder"] = str(state["home"].runs.relative_to(state["home"].root)) or "."

st.sidebar.title("medsplit")
section = st.sidebar.radio("Section", list(SECTIONS), key="section")
home: Places = state["home"]
st.sidebar.text_input("Runs folder (under the root)", key="runs_folder", help=f"root: {home.root}")
try:
    state["places"] = Places(home.root, confined(home.root, state["runs_folder"], "Runs folder"))
except MedsplitError as exc:
    st.sidebar.error(str(exc))
    state["places"] = home
st.sidebar.caption(_PRIVACY)
st.query_params["page"] = section.lower()
SECTIONS[section](state["places"])
