"""Experiment mappings for the topology builder, validated by the engine's own parser and topology compiler."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from medsplit.errors import ConfigError, MedsplitError
from medsplit.config.experiment import Experiment, parse_experiment
from medsplit.config.loader import CONFIG_KEY, config_error, parse_yaml
from medsplit.plan import Plan, compile_topology
from medsplit.topology.presets import KNOBS, PRESETS, PresetConfig

__all__ = ["MODALITIES", "LABELS", "Validation", "default_experiment", "knob_defaults", "site_parties", "validate",
           "to_yaml", "from_yaml", "cli_error", "cut_rows", "label_rows", "label_warnings", "fmt_bytes", "modality_of"]

#: what a site can hold, as the builder offers it: (data key, kind, DICOM modality or None, default shape)
MODALITIES: dict[str, tuple[str, str, str | None, list[int]]] = {
    "CT image": ("image", "dicom", "CT", [1, 32, 32]),
    "MR image": ("image", "dicom", "MR", [1, 32, 32]),
    "CR image": ("image", "dicom", "CR", [1, 32, 32]),
    "DX image": ("image", "dicom", "DX", [1, 32, 32]),
    "EHR table": ("ehr", "table", None, [12]),
}
LABELS = ("diagnosis", "mortality")
_FLOAT32 = 4  # every cut tensor is float32


@dataclass
class Validation:
    """The engine's verdict on an experiment mapping: an experiment and a compiled plan, or the CLI's error."""

    experiment: Experiment | None = None
    plan: Plan | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def cli_error(exc: BaseException, command: str = "run") -> str:
    """The error exactly as ``medsplit COMMAND`` prints it (see ``sites.cli.main``)."""
    return f"medsplit {command}: error: {exc}"


def site_parties(preset: str, sites: int) -> tuple[str, ...]:
    """The site parties of a preset for ``sites`` sites (from the preset registry)."""
    spec = PRESETS[preset]
    return tuple(spec.site_parties(max(sites, spec.min_sites)))


def _site(i: int, party: str, modality: str, labels: list[str]) -> dict[str, Any]:
    key, kind, dicom, shape = MODALITIES[modality]
    spec: dict[str, Any] = {"kind": kind, "shape": list(shape)}
    if dicom:
        spec["modality"] = dicom
    return {"name": f"site_{i + 1}", "config": f"site_{i + 1}/site.yaml", "party": party,
            "modalities": {key: spec}, "labels": list(labels)}


def default_experiment(preset: str) -> dict[str, Any]:
    """A valid experiment for a preset: its sites, default topology knobs and training settings."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'", hint=f"one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    layout = spec.site_data(spec.cohort_sites(3))
    sites = [_site(i, party, "EHR table" if "ehr" in keys else "CT image", list(labels))
             for i, (party, (keys, labels)) in enumerate(layout.items())]
    defaults = knob_defaults()
    return {"experiment": f"{preset}-study", "seed": 0,
            "topology": {"preset": preset, **{k: defaults[k] for k in spec.knobs}},
            "training": {"epochs": 5, "batch_size": 32, "lr": 0.001},
            "sites": sites}


def knob_defaults() -> dict[str, Any]:
    """Every topology knob's default (the presets' own), as YAML writes it."""
    defaults = PresetConfig()
    return {k: list(v) if isinstance(v, tuple) else v for k in KNOBS for v in [getattr(defaults, k)]}


def modality_of(site: Mapping[str, Any]) -> str:
    """The builder's modality label for a site entry (its first declared modality)."""
    for key, spec in (site.get("modalities") or {}).items():
        spec = spec if isinstance(spec, Mapping) else {}
        if key == "ehr" or spec.get("kind") == "table":
            return "EHR table"
        label = f"{spec.get('modality') or 'CT'} image"
        return label if label in MODALITIES else "CT image"
    return "CT image"


def validate(data: Mapping[str, Any], path: str | Path | None = None) -> Validation:
    """Parse, build and compile exactly as the CLI does; a refusal carries the CLI's error text."""
    try:
        experiment = parse_experiment(data, Path(path).resolve() if path else None)
        plan = compile_topology(experiment.build_topology())
    except MedsplitError as exc:
        return Validation(error=cli_error(exc))
    except Exception as exc:  # noqa: BLE001 - a builder value the engine did not anticipate: show, do not crash
        return Validation(error=cli_error(f"{type(exc).__name__}: {exc}"))
    return Validation(experiment, plan)


def to_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(copy.deepcopy(dict(data)), sort_keys=False, default_flow_style=None)


def from_yaml(text: str, path: str | Path | None = None) -> dict[str, Any]:
    """Parse YAML text into a mapping with the CLI's loader (a key given twice is refused), and its errors."""
    data = parse_yaml(text, path, "experiment file")
    if not isinstance(data, Mapping):
        raise config_error(path, "(top level)", f"expected a mapping of keys, got {type(data).__name__}",
                           "write the experiment as 'key: value' lines")
    odd = [k for k in data if not isinstance(k, str) or not CONFIG_KEY.fullmatch(k)]
    if odd:  # a data file that happens to parse as a mapping: its "keys" are a patient's values
        raise config_error(path, "(top level)", f"{len(odd)} key(s) are not experiment keys (not shown: they look "
                           "like data, not configuration)", "open the experiment YAML, not a site's data file")
    return dict(data)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def cut_rows(plan: Plan, batch_size: int) -> list[dict[str, Any]]:
    """Each cut edge: per-sample and per-step shape, and bytes per step (shape x batch size x 4), each way."""
    rows = []
    for e in plan.edges.values():
        per_step = _FLOAT32 * batch_size * math.prod(e.shape)
        rows.append({"cut": e.name, "from": e.src_party, "to": e.dst_party, "per sample": str(tuple(e.shape)),
                     "per step": str((batch_size, *e.shape)), "activations / step": per_step,
                     "gradients / step": per_step})
    return rows


def label_rows(plan: Plan) -> list[dict[str, Any]]:
    """Where each task's labels live, and whether they travel to the party that computes the loss."""
    rows = []
    for task in plan.tasks.values():
        loss_at = plan.segments[task.head].party
        owners = plan.label_owners(task.label)
        moving = [f.src for f in plan.label_flows.values() if f.task == task.name]
        rows.append({"task": task.name, "label": task.label, "owned by": ", ".join(owners), "loss at": loss_at,
                     "labels leave their site": "yes, to " + loss_at if moving else "no"})
    return rows


def label_warnings(experiment: Experiment, plan: Plan) -> list[str]:
    """Sites whose declared labels differ from what their party owns in the topology (the engine uses the latter)."""
    out = []
    for site in experiment.sites:
        party = plan.parties.get(site.party)
        owned = set(party.labels) if party else set()
        if owned - set(site.labels):
            out.append(f"site '{site.name}' ({site.party}) does not declare labels {sorted(owned - set(site.labels))}, "
                       f"but the topology computes its loss from them")
    return out
