"""Topology: pick a preset or build one, see it drawn with its cuts, validate it with the engine, save or load YAML."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from dashboard.experiments import (LABELS, MODALITIES, Validation, cut_rows, default_experiment, fmt_bytes, from_yaml,
                                   knob_defaults, label_rows, label_warnings, modality_of, site_parties, to_yaml,
                                   validate)
from dashboard.graph import topology_dot
from medsplit.errors import MedsplitError
from medsplit.config.experiment import dump_experiment
from medsplit.topology.presets import MERGE_KNOB, PRESETS

__all__ = ["render", "collect", "current", "apply"]

ss = st.session_state
_PRESET_HELP = {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in PRESETS.items()}


def _ints(text: str) -> list[int] | str:
    """'1, 32, 32' -> [1, 32, 32]; anything else is passed on as text for the engine to refuse."""
    try:
        return [int(v) for v in str(text).replace("(", "").replace(")", "").replace("[", "").replace("]", "")
                .split(",") if v.strip()]
    except ValueError:
        return str(text)


def _show_ints(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def apply(data: dict[str, Any], path: str | None = None) -> None:
    """Load an experiment mapping into the form's widgets (and keep it as the base for keys the form lacks)."""
    data = copy.deepcopy(dict(data))
    topo, train = dict(data.get("topology") or {}), dict(data.get("training") or {})
    preset = topo.get("preset") if topo.get("preset") in PRESETS else "vertical"
    defaults = default_experiment(preset)
    knobs = {**knob_defaults(), **topo}
    training = {**defaults["training"], **train}
    ss.update({"t_base": data, "t_path": path, "t_preset": preset, "t_name": str(data.get("experiment", "")),
               "t_seed": int(data.get("seed", 0) or 0), "t_ushaped": bool(knobs["ushaped"]),
               "t_merge": knobs["merge"] if knobs["merge"] in MERGE_KNOB else "concat",
               "t_nopeek": float(knobs["nopeek"]), "t_hops": int(knobs["hops"]), "t_servers": int(knobs["servers"]),
               "t_cut_features": int(knobs["cut_features"]), "t_hidden": int(knobs["hidden"]),
               "t_channels": _show_ints(knobs["channels"]), "t_epochs": int(training["epochs"]),
               "t_batch_size": int(training["batch_size"]), "t_lr": float(training["lr"])})
    sites = data.get("sites") if isinstance(data.get("sites"), list) else []
    ss["t_nsites"] = max(1, len(sites))
    for i, site in enumerate(sites):
        site = site if isinstance(site, dict) else {}
        mods = site.get("modalities") or {}
        first = next(iter(mods.values()), {}) if isinstance(mods, dict) else {}
        ss.update({f"t_s{i}_name": str(site.get("name", f"site_{i + 1}")), f"t_s{i}_party": site.get("party") or "",
                   f"t_s{i}_modality": modality_of(site),
                   f"t_s{i}_shape": _show_ints(first.get("shape", "")) if isinstance(first, dict) else "",
                   f"t_s{i}_labels": [str(v) for v in site.get("labels") or []],
                   f"t_s{i}_config": str(site.get("config") or "")})


def _on_preset() -> None:
    """A new preset starts from its default sites and knobs; the training settings and seed stay."""
    data = default_experiment(ss["t_preset"])
    data["training"] = {"epochs": ss["t_epochs"], "batch_size": ss["t_batch_size"], "lr": ss["t_lr"]}
    data["seed"] = ss["t_seed"]
    apply(data)


def _site_defaults(i: int, preset: str, parties: list[str]) -> None:
    if f"t_s{i}_name" not in ss:
        ss.update({f"t_s{i}_name": f"site_{i + 1}", f"t_s{i}_party": parties[i] if i < len(parties) else "",
                   f"t_s{i}_modality": "CT image", f"t_s{i}_shape": "1, 32, 32",
                   f"t_s{i}_labels": ["diagnosis"] if preset != "vertical" else [],
                   f"t_s{i}_config": f"site_{i + 1}/site.yaml"})


def collect() -> dict[str, Any]:
    """The experiment mapping the form describes: the base (loaded YAML or preset) with the form's values on top."""
    data = copy.deepcopy(ss["t_base"])
    preset = ss["t_preset"]
    data["experiment"] = ss["t_name"]
    data["seed"] = int(ss["t_seed"])
    topo = dict(data.get("topology") or {})
    topo["preset"] = preset
    for knob in PRESETS[preset].knobs:  # the experiment refuses a knob its preset does not read
        value = ss.get(f"t_{knob}")
        topo[knob] = _ints(value) if knob == "channels" else value
    data["topology"] = topo
    data["training"] = {**dict(data.get("training") or {}), "epochs": int(ss["t_epochs"]),
                        "batch_size": int(ss["t_batch_size"]), "lr": float(ss["t_lr"])}
    old = data.get("sites") if isinstance(data.get("sites"), list) else []
    sites = []
    for i in range(int(ss["t_nsites"])):
        site = dict(old[i]) if i < len(old) and isinstance(old[i], dict) else {}
        key, kind, dicom, _ = MODALITIES[ss[f"t_s{i}_modality"]]
        mods = site.get("modalities") if isinstance(site.get("modalities"), dict) else {}
        spec = {k: v for k, v in dict(mods.get(key) or {}).items() if k not in ("kind", "modality", "shape")}
        spec.update({"kind": kind, **({"modality": dicom} if dicom else {}), "shape": _ints(ss[f"t_s{i}_shape"])})
        site.update({"name": ss[f"t_s{i}_name"], "modalities": {key: spec}, "labels": list(ss[f"t_s{i}_labels"])})
        for field, value in (("party", ss[f"t_s{i}_party"]), ("config", ss[f"t_s{i}_config"])):
            if value:
                site[field] = value
            else:
                site.pop(field, None)
        sites.append(site)
    data["sites"] = sites
    return data


@st.cache_resource(max_entries=64, show_spinner=False)
def _validated(text: str, path: str | None):
    return validate(yaml.safe_load(text), path)


def _sites_form(preset: str) -> None:
    st.number_input("Sites", min_value=1, max_value=8, step=1, key="t_nsites",
                    help="vanilla, U-shaped, multi-task and multi-hop take one site; vertical two; "
                         "horizontal and SplitFed two or more")
    parties = site_parties(preset, int(ss["t_nsites"]))
    for i in range(int(ss["t_nsites"])):
        _site_defaults(i, preset, parties)
        options = list(dict.fromkeys([*parties, ss[f"t_s{i}_party"]]))
        c = st.columns([2, 2, 2, 2, 3, 4])
        c[0].text_input("Name", key=f"t_s{i}_name")
        c[1].selectbox("Role (party)", options, key=f"t_s{i}_party",
                       help="the site's place in the topology; empty: the preset's default for its modality")
        c[2].selectbox("Modality", list(MODALITIES), key=f"t_s{i}_modality")
        c[3].text_input("Sample shape", key=f"t_s{i}_shape", help="per patient: C, H, W (image) or F (EHR)")
        c[4].multiselect("Labels held", list(dict.fromkeys([*LABELS, *ss[f"t_s{i}_labels"]])), key=f"t_s{i}_labels")
        c[5].text_input("Data location (site YAML, as its admin declared it)", key=f"t_s{i}_config")


def _knobs_form(preset: str) -> None:
    """A widget for each knob the preset reads (PresetSpec.knobs)."""
    knobs = PRESETS[preset].knobs
    c = iter(st.columns(4) + st.columns(4))
    if "cut_features" in knobs:
        next(c).number_input("Cut features", min_value=1, step=1, key="t_cut_features",
                             help="width of the cut for encoders that end in a linear layer")
    if "hidden" in knobs:
        next(c).number_input("Hidden units", min_value=1, step=1, key="t_hidden")
    if "channels" in knobs:
        next(c).text_input("Conv channels", key="t_channels", help="site encoder channels, e.g. 8, 16")
    if "nopeek" in knobs:
        next(c).number_input("NoPeek α", min_value=0.0, step=0.1, format="%.2f", key="t_nopeek",
                             help="NoPeek: each site also descends dCor(raw input, cut), pulling α times as hard "
                                  "as the task; 0 is off")
    if "merge" in knobs:
        next(c).selectbox("Merge at the server", list(MERGE_KNOB), key="t_merge")
    if "ushaped" in knobs:
        next(c).checkbox("Keep labels at their site (U-shaped)", key="t_ushaped")
    if "hops" in knobs:
        next(c).number_input("Hops (relays)", min_value=1, max_value=8, step=1, key="t_hops")
    if "servers" in knobs:
        next(c).number_input("Servers", min_value=1, max_value=4, step=1, key="t_servers")
    if preset == "multitask":
        next(c).text_input("Tasks", value="diagnosis, mortality", disabled=True,
                           help="the multi-task preset's tasks; the experiment YAML has no key to change them")


def _training_form() -> None:
    c = st.columns(5)
    c[0].selectbox("Optimizer", ["Adam"], disabled=True, help="every party trains with Adam at this rate")
    c[1].number_input("Learning rate", min_value=1e-6, step=1e-4, format="%.4f", key="t_lr")
    c[2].number_input("Batch size", min_value=1, step=1, key="t_batch_size")
    c[3].number_input("Epochs", min_value=1, step=1, key="t_epochs")
    c[4].number_input("Seed", min_value=0, step=1, key="t_seed")


def _load() -> None:
    path = ss.get("t_load_path", "")
    try:
        data = from_yaml(Path(path).expanduser().read_text(), Path(path).expanduser())
    except (OSError, MedsplitError) as exc:
        ss["t_msg"] = ("error", f"cannot load {path}: {exc}")
        return
    apply(data, str(Path(path).expanduser()))
    ss["t_msg"] = ("success", f"loaded {path}")


def _save() -> None:
    path = ss.get("t_save_path", "")
    try:
        dump_experiment(collect(), Path(path).expanduser())
    except (OSError, MedsplitError) as exc:
        ss["t_msg"] = ("error", f"not saved: {exc}")
        return
    ss["t_msg"] = ("success", f"saved {path}")


def _apply_text() -> None:
    try:
        apply(from_yaml(ss.get(ss.get("t_edit_key", ""), "")), ss.get("t_path"))
    except MedsplitError as exc:
        ss["t_msg"] = ("error", str(exc))


def _show_plan(v: Validation, batch_size: int) -> None:
    plan = v.plan
    st.success(f"Valid: {len(plan.parties)} parties, {len(plan.segments)} segments, {len(plan.edges)} cut edges, "
               f"{len(plan.label_flows)} label flows (checked by the engine's parse_experiment and compile_topology).")
    for warning in label_warnings(v.experiment, plan):
        st.warning(warning)
    st.graphviz_chart(topology_dot(plan, batch_size))
    rows = cut_rows(plan, batch_size)
    if rows:
        table = pd.DataFrame(rows)
        for col in ("activations / step", "gradients / step"):
            table[col] = [f"{fmt_bytes(b)} ({b:,} B)" for b in table[col]]
        st.markdown("**Cut edges** (bytes per step = shape × batch size × 4 bytes, float32)")
        st.dataframe(table, hide_index=True)
    st.markdown("**Where the labels live**")
    st.dataframe(pd.DataFrame(label_rows(plan)), hide_index=True)
    with st.expander("The engine's description"):
        st.code(plan.describe(), language=None)


def current() -> tuple[dict[str, Any], Validation]:
    """The experiment the form describes now, and the engine's verdict on it (a Validation)."""
    if "t_base" not in ss:
        apply(default_experiment("vertical"))
    data = collect()
    return data, _validated(to_yaml(data), ss.get("t_path"))


def render(root: Path) -> None:
    """The Topology section."""
    st.header("Topology")
    if "t_base" not in ss:
        apply(default_experiment("vertical"))
    c = st.columns([2, 3, 5])
    c[0].selectbox("Preset", list(PRESETS), key="t_preset", on_change=_on_preset)
    c[1].text_input("Experiment name", key="t_name")
    c[2].caption(_PRESET_HELP.get(ss["t_preset"], ""))
    preset = ss["t_preset"]
    with st.expander("Sites", expanded=True):
        _sites_form(preset)
    with st.expander("Cut layers, merge, tasks, hops, NoPeek", expanded=True):
        _knobs_form(preset)
    with st.expander("Training", expanded=True):
        _training_form()
    data, v = current()
    text = to_yaml(data)
    if v.ok:
        _show_plan(v, int(ss["t_batch_size"]))
    else:
        st.error(v.error)
    _yaml_tools(data, text, root)


def _yaml_tools(data: dict[str, Any], text: str, root: Path) -> None:
    st.subheader("Experiment YAML")
    if "t_msg" in ss:
        kind, msg = ss.pop("t_msg")
        (st.success if kind == "success" else st.error)(msg)
    left, right = st.columns(2)
    with left:
        st.code(text, language="yaml")
        st.download_button("Download YAML", text, file_name=f"{data.get('experiment') or 'experiment'}.yaml",
                           mime="text/yaml")
    with right:
        default = str(Path(ss.get("t_path") or root / f"{data.get('experiment') or 'experiment'}.yaml"))
        if "t_save_path" not in ss:
            ss["t_save_path"] = default
        st.text_input("Save to", key="t_save_path")
        st.button("Save", key="b_save", on_click=_save)
        st.text_input("Load from", key="t_load_path", placeholder="path/to/experiment.yaml")
        st.button("Load", key="b_load", on_click=_load)
        ss["t_edit_key"] = "x_edit_" + hashlib.sha1(text.encode()).hexdigest()[:12]
        st.text_area("Edit the YAML directly", value=text, height=240, key=ss["t_edit_key"])
        st.button("Apply YAML", key="b_apply", on_click=_apply_text)
