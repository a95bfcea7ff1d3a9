"""Topology: design a study (sites holding any data mix, an encoder per data key, a preset and its knobs,
training), stored under the runs folder; the engine validates it as `medsplit run` would, errors are pinned to
their field, and the graph is drawn either way (the faulty element in red)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from dashboard import edits
from dashboard.designs import Designs, Draft
from dashboard.experiments import (
    ENCODER_CHOICES,
    KINDS,
    LABELS,
    Validation,
    cut_rows,
    default_experiment,
    fmt_bytes,
    from_yaml,
    knob_defaults,
    label_rows,
    label_warnings,
    to_yaml,
    validate,
)
from dashboard.graph import sketch_dot, topology_dot
from dashboard.settings import Places, confined
from medsplit.config.experiment import dump_experiment
from medsplit.errors import MedsplitError
from medsplit.topology.presets import KNOBS, MERGE_KNOB, PRESETS

__all__ = ["render", "current", "designs", "open_design"]

ss = st.session_state
_PRESET_HELP = {name: spec.summary for name, spec in PRESETS.items()}
_KNOB_HELP = {"nopeek": "NoPeek: each site also descends dCor(raw input, cut), pulling α times as hard as the task; "
                        "0 is off",
              "cut_features": "width of the cut for encoders that end in a linear layer",
              "channels": "site CNN channels, e.g. 8, 16"}


def _text_or_drop(text: object) -> object:
    return str(text).strip() or edits.DROP


# --- the stored design -------------------------------------------------------------------------------------


def designs() -> Designs:
    return Designs(ss["places"].runs)


def _unique(store: Designs, base: str) -> str:
    names, n, name = set(store.names()), 1, base
    while name in names:
        n += 1
        name = f"{base}-{n}"
    return name


def open_design() -> Draft:
    """The design this tab works on (``?design=``, else the newest stored, else a new vertical one)."""
    store = designs()
    name = ss.get("t_design") or st.query_params.get("design")
    draft = store.read(name) if name and name in store.names() else None
    if draft is None:
        names = store.names()
        newest = store.read(names[0]) if names else None
        draft = newest or store.write("vertical-study", default_experiment("vertical"))
    ss["t_design"] = draft.name
    st.query_params["design"] = draft.name
    return draft


def current() -> tuple[Draft, Validation]:
    """The stored design this tab works on, and the engine's verdict on it."""
    draft = open_design()
    return draft, _validated(draft.text, draft.source)


@st.cache_resource(max_entries=64, show_spinner=False)
def _validated(text: str, source: str | None) -> Validation:
    return validate(yaml.safe_load(text), source)


def _edit(change: Callable[[dict], None], source: Any = ...) -> None:
    """Apply ``change`` to the stored design (read now: another tab's edits are kept) and store it; the widgets
    are then refreshed from what was stored."""
    store = designs()
    draft = store.read(ss["t_design"]) or Draft(ss["t_design"], {}, "")
    data = copy.deepcopy(draft.data)
    change(data)
    store.write(draft.name, data, draft.source if source is ... else source)
    ss["t_rev"] = None


def _field(key: str, path: tuple, parse: Callable[[Any], Any] = edits.value) -> None:
    """A widget's on_change: its value, parsed, at ``path`` of the design."""
    _edit(lambda data: edits.put(data, path, parse(ss[key])))


def _mod_field(i: int, j: int, name: str, path: tuple, parse: Callable[[Any], Any]) -> None:
    """A data key's widget: its value, parsed, at ``path`` of data key ``j`` of site ``i``."""
    _edit(lambda data: edits.put(list(edits.mods(edits.sites(data)[i]).values())[j], path,
                                 parse(ss[f"t_s{i}_m{j}_{name}"])))


def _sync(draft: Draft) -> None:
    """Every widget shows the stored design (on first render, and whenever it changed: this tab or another)."""
    if ss.get("t_rev") != draft.rev:
        ss.update(edits.widget_values(draft.data))
        ss["t_rev"] = draft.rev


def _set_preset() -> None:
    if ss["t_preset"] in PRESETS:  # back to a value the YAML holds that is not a preset: nothing to rebuild
        _edit(lambda data: edits.set_preset(data, ss["t_preset"]))


def _remove_site(i: int) -> None:
    _edit(lambda data: edits.sites(data).pop(i) if i < len(edits.sites(data)) else None)


def _remove_data(i: int, key: str) -> None:
    _edit(lambda data: edits.mods(edits.sites(data)[i]).pop(key, None))


def _pin(key: str) -> None:
    """The engine's error under the field it is about: the problem and the fix."""
    v: Validation = ss["_t_verdict"]
    if v.error and ss["_t_target"] == key:
        ss["_t_pinned"] = True
        text = v.error.removeprefix("medsplit run: error: ")
        st.error(text, icon=":material/error:")


# --- the form ------------------------------------------------------------------------------------------------


def _text(column: Any, label: str, key: str, path: tuple, parse: Callable[[Any], Any] = edits.value,
          **kw: Any) -> None:
    column.text_input(label, key=key, on_change=_field, args=(key, path, parse), **kw)
    with column:
        _pin(key)


def _sites_form(data: dict) -> None:
    for i, site in enumerate(edits.sites(data)):
        site = site if isinstance(site, dict) else {}
        c = st.columns([2, 2, 3, 3, 1], vertical_alignment="bottom")
        _text(c[0], f"Site {i + 1}: name", f"t_s{i}_name", ("sites", i, "name"))
        _text(c[1], "Party", f"t_s{i}_party", ("sites", i, "party"),
              _text_or_drop, placeholder="its name", help="its name in the topology")
        labels = list(dict.fromkeys([*LABELS, *ss.get(f"t_s{i}_labels", [])]))
        c[2].multiselect("Labels held", labels, key=f"t_s{i}_labels", on_change=_field,
                         args=(f"t_s{i}_labels", ("sites", i, "labels"), list))
        with c[2]:
            _pin(f"t_s{i}_labels")
        _text(c[3], "Site YAML (as its admin declared it)", f"t_s{i}_config", ("sites", i, "config"), _text_or_drop)
        c[4].button("Remove", key=f"b_rm_site_{i}", on_click=_remove_site, args=(i,), help="remove this site")
        for j, key in enumerate(edits.mods(site)):
            d = st.columns([0.3, 2, 2, 2, 2, 3, 1], vertical_alignment="bottom")
            d[0].markdown("↳")
            d[1].text_input("Data key", key=f"t_s{i}_m{j}_key", on_change=lambda i=i, j=j: _edit(
                lambda data: edits.rename_data(data, i, j, str(ss[f"t_s{i}_m{j}_key"]).strip())))
            kinds = list(dict.fromkeys([*KINDS, ss.get(f"t_s{i}_m{j}_kind", "table")]))
            d[2].selectbox("Kind", kinds, key=f"t_s{i}_m{j}_kind", help="a table, or DICOM images of a modality",
                           on_change=lambda i=i, j=j: _edit(lambda data: edits.set_kind(data, i, j,
                                                                                         ss[f"t_s{i}_m{j}_kind"])))
            with d[2]:
                _pin(f"t_s{i}_m{j}_kind")
            d[3].text_input("Per-sample shape", key=f"t_s{i}_m{j}_shape", on_change=_mod_field,
                            args=(i, j, "shape", ("shape",), edits.values),
                            help="table: F; image: C, H, W or C, D, H, W")
            with d[3]:
                _pin(f"t_s{i}_m{j}_shape")
            encs = list(dict.fromkeys([*ENCODER_CHOICES, ss.get(f"t_s{i}_m{j}_enc", "default")]))
            d[4].selectbox("Encoder", encs, key=f"t_s{i}_m{j}_enc",
                           help="default: mlp for a table, cnn for an image; module: the study's own code",
                           on_change=lambda i=i, j=j: _edit(lambda data: edits.set_encoder(
                               data, i, j, ss[f"t_s{i}_m{j}_enc"], ss.get(f"t_s{i}_m{j}_module", ""))))
            with d[4]:
                _pin(f"t_s{i}_m{j}_enc")
            if ss.get(f"t_s{i}_m{j}_enc") == "module":
                d[5].text_input("Encoder module", key=f"t_s{i}_m{j}_module", on_change=_mod_field,
                                args=(i, j, "module", ("encoder", "module"), _text_or_drop),
                                placeholder="package.module:factory",
                                help="every party imports it from its own installed code")
            d[6].button("✕", key=f"b_rm_data_{i}_{j}", on_click=_remove_data, args=(i, key),
                        help=f"remove '{key}' from this site")
        st.button("Add data to this site", key=f"b_add_data_{i}",
                  on_click=lambda i=i: _edit(lambda data: edits.add_data(data, i)))
        _pin(f"t_s{i}_mods")
        _pin(f"t_s{i}")
        st.divider()
    st.button("Add site", key="b_add_site", on_click=lambda: _edit(edits.add_site))
    _pin("t_sites")


def _knobs_form(data: dict) -> None:
    """A widget for each knob the preset reads (PresetSpec.knobs); an unknown preset shows the knobs it sets."""
    found = data.get("topology")
    topo: dict = found if isinstance(found, dict) else {}
    preset = topo.get("preset")
    knobs = PRESETS[preset].knobs if preset in PRESETS else tuple(k for k in KNOBS if k in topo)
    c = iter(st.columns(4) + st.columns(4))
    labels = {"cut_features": "Cut features", "hidden": "Hidden units", "channels": "Conv channels (site CNN)",
              "nopeek": "NoPeek α", "hops": "Hops (relays)", "servers": "Servers"}
    for knob in knobs:
        col = next(c)
        if knob == "merge":
            options = list(dict.fromkeys([*MERGE_KNOB, *([topo["merge"]] if "merge" in topo else [])]))
            col.selectbox("Merge at the server", options, key="t_merge", on_change=_field,
                          args=("t_merge", ("topology", "merge"), lambda v: v))
        elif knob == "ushaped":
            col.checkbox("Keep labels at their site (U-shaped)", key="t_ushaped", on_change=_field,
                         args=("t_ushaped", ("topology", "ushaped"), bool))
        else:
            parse = edits.values if knob == "channels" else edits.value
            col.text_input(labels[knob], key=f"t_{knob}", on_change=_field,
                           args=(f"t_{knob}", ("topology", knob), parse), help=_KNOB_HELP.get(knob),
                           placeholder=f"default {edits.show(knob_defaults()[knob])}")
        with col:
            _pin(f"t_{knob}")


def _training_form() -> None:
    c = st.columns(5)
    c[0].selectbox("Optimizer", ["Adam"], disabled=True, help="every party trains with Adam at this rate")
    _text(c[1], "Learning rate", "t_lr", ("training", "lr"), placeholder="default 0.001")
    _text(c[2], "Batch size", "t_batch_size", ("training", "batch_size"), placeholder="default 32")
    _text(c[3], "Epochs", "t_epochs", ("training", "epochs"), placeholder="default 5")
    _text(c[4], "Seed", "t_seed", ("seed",), placeholder="default 0")
    _pin("t_training")


def _verdict(v: Validation, data: dict, batch: Any) -> None:
    if v.error is not None:  # not v.ok: the engine refused it
        st.error(v.error)
        problem = v.error.removeprefix("medsplit run: error: ").split("\n")[0]
        st.graphviz_chart(sketch_dot(data, v.key, problem))
        return
    experiment, plan = v.experiment, v.plan
    assert experiment is not None and plan is not None  # validate() gives both when it has no error
    if not v.flags:
        st.success(f"Valid: {len(plan.parties)} parties, {len(plan.segments)} segments, {len(plan.edges)} cut edges, "
                   f"{len(plan.label_flows)} label flows (checked by the engine's parse_experiment and "
                   "compile_topology, as `medsplit run` does).")
    else:
        st.warning("Valid for the engine, but flagged: " + " / ".join(v.flags), icon=":material/flag:")
    for warning in label_warnings(experiment, plan):
        st.warning(warning)
    st.graphviz_chart(topology_dot(plan, int(batch)))
    rows = cut_rows(plan, int(batch))
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


def render(places: Places) -> None:
    """The Topology section."""
    st.header("Topology")
    draft, v = current()
    _sync(draft)
    data = draft.data
    ss["_t_verdict"], ss["_t_target"], ss["_t_pinned"] = v, edits.target(v.key, data), False
    c = st.columns([3, 2, 3, 4], vertical_alignment="bottom")
    store = designs()
    c[0].selectbox("Design (stored under the runs folder)", store.names(), key="t_design",
                   on_change=lambda: ss.update(t_rev=None))
    c[1].button("New design", key="b_new_design", on_click=_new_design)
    presets = list(dict.fromkeys([*PRESETS, str(ss.get("t_preset", ""))]))
    c[2].selectbox("Preset", presets, key="t_preset", on_change=_set_preset,
                   format_func=lambda p: p if p in PRESETS else f"{p} (not a preset)" if p else "(none given)")
    with c[2]:
        _pin("t_preset")
    _text(c[3], "Experiment name", "t_name", ("experiment",))
    st.caption(_PRESET_HELP.get(str(ss.get("t_preset")), ""))
    with st.expander("Sites: who holds which data, with which encoder", expanded=True):
        _sites_form(data)
    with st.expander("Cut layers, merge, hops, servers, NoPeek (the knobs this preset reads)", expanded=True):
        _knobs_form(data)
    with st.expander("Training", expanded=True):
        _training_form()
    batch = edits.get(data, ("training", "batch_size"))
    _verdict(v, data, batch if isinstance(batch, int) and batch > 0 else 32)
    _yaml_tools(draft, places.root)


def _new_design() -> None:
    chosen = ss.get("t_preset")
    preset = chosen if isinstance(chosen, str) and chosen in PRESETS else "vertical"
    store = designs()
    draft = store.write(_unique(store, f"{preset}-study"), default_experiment(preset))
    ss["t_design"], ss["t_rev"] = draft.name, None


# --- YAML: export, load, edit ----------------------------------------------------------------------------


def _replace(design: dict, data: dict) -> None:
    design.clear()
    design.update(data)


def _load(root: Path) -> None:
    path = ss.get("t_load_path", "")
    try:
        where = confined(root, path, "Load from")
        data = from_yaml(where.read_text(), where)
    except (OSError, MedsplitError) as exc:
        ss["t_msg"] = ("error", f"cannot load {path}: {exc}")
        return
    _edit(lambda d: _replace(d, data), source=str(where))
    ss["t_msg"] = ("success", f"loaded {path}")


def _save(root: Path) -> None:
    path = ss.get("t_save_path", "")
    try:
        dump_experiment(designs().read(ss["t_design"]).data, confined(root, path, "Save to"))  # type: ignore[union-attr]
    except (OSError, MedsplitError) as exc:
        ss["t_msg"] = ("error", f"not saved: {exc}")
        return
    ss["t_msg"] = ("success", f"saved {path}")


def _apply_text() -> None:
    try:
        data = from_yaml(ss.get(ss.get("t_edit_key", ""), ""))
    except MedsplitError as exc:
        ss["t_msg"] = ("error", str(exc))
        return
    _edit(lambda d: _replace(d, data))


def _yaml_tools(draft: Draft, root: Path) -> None:
    st.subheader("Experiment YAML")
    text = to_yaml(draft.data)
    if not ss["_t_pinned"]:
        _pin("t_yaml")
    if "t_msg" in ss:
        kind, msg = ss.pop("t_msg")
        (st.success if kind == "success" else st.error)(msg)
    left, right = st.columns(2)
    name = str(draft.data.get("experiment") or "experiment")
    with left:
        st.code(text, language="yaml")
        st.download_button("Download YAML", text, file_name=f"{name}.yaml", mime="text/yaml")
    with right:
        default = f"{name}.yaml"  # follows the experiment's name until the user types a path of their own
        if ss.get("t_save_path") in (None, ss.get("t_save_auto")):
            ss["t_save_path"] = default
        ss["t_save_auto"] = default
        st.text_input("Save to (under the dashboard's root)", key="t_save_path")
        st.button("Save", key="b_save", on_click=_save, args=(root,))
        st.text_input("Load from (under the dashboard's root)", key="t_load_path",
                      placeholder="path/to/experiment.yaml")
        st.button("Load", key="b_load", on_click=_load, args=(root,))
        ss["t_edit_key"] = f"x_edit_{draft.rev}"
        st.text_area("Edit the YAML directly", value=text, height=240, key=ss["t_edit_key"])
        st.button("Apply YAML", key="b_apply", on_click=_apply_text)
