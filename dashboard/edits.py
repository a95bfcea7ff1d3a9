"""Edits to a design (an experiment mapping) as the Topology form makes them: values kept as typed (never
clamped or guessed), structural changes, what each widget shows, and the widget an engine error is about."""

from __future__ import annotations

import re
from typing import Any

from medsplit.topology.presets import KNOBS, PRESETS

from .experiments import KINDS, default_experiment, default_modality, knob_defaults

__all__ = ["DROP", "value", "values", "show", "get", "put", "sites", "mods", "widget_values", "target", "set_preset",
           "add_site", "add_data", "rename_data", "set_kind", "set_encoder", "UNSET"]

DROP = object()  # a field left empty: the key is removed (the engine's default applies, and the YAML shows it)
UNSET = "(not set)"  # the Kind of a data key whose kind the YAML does not give
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def value(text: Any) -> Any:
    """'3' -> 3, '1e-3' -> 0.001, '' -> dropped, anything else stays text for the engine to refuse."""
    text = str(text).strip()
    if not text:
        return DROP
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return float(text) if _NUMBER.match(text) else text


def values(text: Any) -> list[Any]:
    """'1, 32, 32' -> [1, 32, 32]; '1, big, 32' -> [1, 'big', 32] (the engine names the bad item)."""
    return [v for v in (value(t) for t in str(text).strip().strip("[]()").split(",")) if v is not DROP]


def show(data: Any) -> str:
    """A value as a text widget shows it: a list as '1, 32, 32', nothing as ''."""
    if data is None:
        return ""
    if isinstance(data, (list, tuple)):
        return ", ".join(str(v) for v in data)
    return str(data)


def get(data: Any, path: tuple) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def put(data: dict, path: tuple, new: Any) -> None:
    """Set ``path`` (keys and list indices) to ``new``, creating mappings on the way; DROP removes the key."""
    node: dict | list = data
    for part in path[:-1]:
        nxt = node[part] if isinstance(node, list) else node.get(part)
        if not isinstance(nxt, (dict, list)):
            nxt = {}
            node[part] = nxt
        node = nxt
    if new is DROP:
        if isinstance(node, dict):
            node.pop(path[-1], None)
    else:
        node[path[-1]] = new


def sites(data: dict) -> list:
    found = data.get("sites")
    return found if isinstance(found, list) else []


def mods(site: Any) -> dict:
    found = site.get("modalities") if isinstance(site, dict) else None
    return found if isinstance(found, dict) else {}


def _kind_label(spec: Any) -> str:
    """The Kind widget's label for a data key: 'table', a DICOM modality, 'dicom' (none given) or what is written."""
    spec = spec if isinstance(spec, dict) else {}
    if spec.get("kind") == "dicom":
        return str(spec.get("modality") or "dicom")
    return str(spec.get("kind") or UNSET)


def widget_values(data: dict) -> dict[str, Any]:
    """What every widget of the form shows for ``data``, by widget key."""
    found = data.get("topology")
    topo: dict = found if isinstance(found, dict) else {}
    out: dict[str, Any] = {"t_name": show(data.get("experiment")), "t_seed": show(data.get("seed")),
                           "t_preset": str(topo.get("preset") or "")}
    for name in ("epochs", "batch_size", "lr"):
        out[f"t_{name}"] = show(get(data, ("training", name)))
    defaults = knob_defaults()
    for knob in KNOBS:  # a knob not written shows the engine's default: what the engine will use
        out[f"t_{knob}"] = (bool(topo.get(knob)) if knob == "ushaped" else str(topo.get(knob, defaults[knob]))
                            if knob == "merge" else show(topo.get(knob)))
    for i, site in enumerate(sites(data)):
        site = site if isinstance(site, dict) else {}
        labels = site.get("labels")
        out.update({f"t_s{i}_name": show(site.get("name")), f"t_s{i}_party": show(site.get("party")),
                    f"t_s{i}_labels": [str(v) for v in labels] if isinstance(labels, list) else [],
                    f"t_s{i}_config": show(site.get("config"))})
        for j, (key, spec) in enumerate(mods(site).items()):
            spec = spec if isinstance(spec, dict) else {}
            found = spec.get("encoder")
            enc: dict = found if isinstance(found, dict) else {}
            out.update({f"t_s{i}_m{j}_key": str(key), f"t_s{i}_m{j}_kind": _kind_label(spec),
                        f"t_s{i}_m{j}_shape": show(spec.get("shape")),
                        f"t_s{i}_m{j}_enc": str(enc.get("kind") or "default"),
                        f"t_s{i}_m{j}_module": show(enc.get("module"))})
    return out


def target(key: str | None, data: dict) -> str:
    """The widget an engine error is about, from its key (``sites[1].modalities.image.shape[0]``); 't_yaml' for
    what the form has no field for."""
    if not key:
        return "t_yaml"
    simple = {"experiment": "t_name", "seed": "t_seed", "sites": "t_sites", "topology": "t_preset",
              "topology.preset": "t_preset", "topology.factory": "t_preset"}
    if key in simple:
        return simple[key]
    m = re.match(r"topology\.(\w+)", key)
    if m:
        return f"t_{m.group(1)}" if m.group(1) in KNOBS else "t_preset"
    m = re.match(r"training\.(\w+)", key)
    if m:
        return f"t_{m.group(1)}" if m.group(1) in ("epochs", "batch_size", "lr") else "t_training"
    m = re.match(r"sites\[(\d+)\](?:\.(\w+))?(?:\.([^.\[]+))?(?:\.(\w+))?", key)
    if not m:
        return "t_yaml"
    i, field, mkey, mfield = int(m.group(1)), m.group(2), m.group(3), m.group(4)
    if field == "modalities" and mkey:
        keys = list(mods(get(data, ("sites", i))))
        if mkey not in keys:
            return f"t_s{i}_mods"
        names = {"kind": "kind", "modality": "kind", "encoder": "enc"}  # the rest: about its shape
        return f"t_s{i}_m{keys.index(mkey)}_{names.get(mfield, 'shape')}"
    if field in ("name", "party", "labels", "config"):
        return f"t_s{i}_{field}"
    return f"t_s{i}_mods" if field == "modalities" else f"t_s{i}"


# --- structural changes ------------------------------------------------------------------------------------


def set_preset(data: dict, new: str) -> None:
    """A preset reads its own knobs (the others would be refused): they are set to its defaults (values of knobs
    it shares with the old preset kept); sites stay when it takes as many, else its default sites come in."""
    spec, defaults = PRESETS[new], knob_defaults()
    found = data.get("topology")
    topo: dict = found if isinstance(found, dict) else {}
    data["topology"] = {"preset": new, **{k: topo.get(k, defaults[k]) for k in spec.knobs}}
    if not spec.takes(len(sites(data))):
        data["sites"] = default_experiment(new)["sites"]


def add_site(data: dict) -> None:
    """A site holding an EHR table, named after its place."""
    found = sites(data)
    i = len(found) + 1
    key, spec = default_modality("table")
    found.append({"name": f"site_{i}", "config": f"site_{i}/site.yaml", "modalities": {key: spec}, "labels": []})
    data["sites"] = found


def add_data(data: dict, i: int) -> None:
    """Another data key at site ``i``: a table, or CT images where it holds a table already."""
    held = mods(sites(data)[i])
    key, spec = default_modality("CT" if "ehr" in held else "table")
    while key in held:
        key += "_2"
    held[key] = spec
    sites(data)[i]["modalities"] = held


def rename_data(data: dict, i: int, j: int, new: str) -> None:
    """Data key ``j`` of site ``i`` renamed in place (order kept); a name the site already uses is left alone."""
    site = sites(data)[i]
    items = list(mods(site).items())
    if j < len(items) and new not in dict(items):
        items[j] = (new, items[j][1])
        site["modalities"] = dict(items)


def set_kind(data: dict, i: int, j: int, label: str) -> None:
    """A data key becomes a table or DICOM images of a modality (KINDS); UNSET removes the kind."""
    kind, dicom = KINDS.get(label) or ((None, None) if label == UNSET else (label, None))
    spec = list(mods(sites(data)[i]).values())[j]
    put(spec, ("kind",), kind if kind is not None else DROP)
    put(spec, ("modality",), dicom if dicom else DROP)


def set_encoder(data: dict, i: int, j: int, choice: str, module: str = "") -> None:
    """The encoder of a data key: 'default' (none written), a kind of the family, or the study's own module."""
    spec = list(mods(sites(data)[i]).values())[j]
    if choice == "default":
        spec.pop("encoder", None)
    else:
        spec["encoder"] = {"kind": choice, **({"module": module or "package.module:factory"}
                                              if choice == "module" else {})}
