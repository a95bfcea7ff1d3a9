"""Experiment mappings for the topology builder, validated by the engine's own parser and topology compiler."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_adapters.synth import ehr_feature_dim
from medsplit.config.experiment import Experiment, parse_experiment
from medsplit.config.loader import CONFIG_KEY, config_error, parse_yaml
from medsplit.errors import ConfigError, MedsplitError
from medsplit.plan import Plan, compile_topology
from medsplit.topology.encoders import ENCODERS
from medsplit.topology.presets import KNOBS, PRESETS, PresetConfig

__all__ = ["KINDS", "ENCODER_CHOICES", "LABELS", "Validation", "default_experiment", "default_modality",
           "knob_defaults", "site_parties", "validate", "to_yaml", "from_yaml", "cli_error", "cut_rows", "label_rows",
           "label_warnings", "fmt_bytes", "error_key", "flags", "FLAG_BYTES", "FLAG_BATCH"]

#: what a site's data key can be, as the builder offers it: label -> (kind, DICOM modality or None)
KINDS: dict[str, tuple[str, str | None]] = {"table": ("table", None), "CT": ("dicom", "CT"), "MR": ("dicom", "MR"),
                                            "CR": ("dicom", "CR"), "DX": ("dicom", "DX")}
#: "default": the experiment names no encoder (mlp for a table, cnn for an image)
ENCODER_CHOICES = ("default", *ENCODERS)
LABELS = ("diagnosis", "mortality")
_FLOAT32 = 4  # every cut tensor is float32
#: flagged, though valid (likely a slip): a cut carrying more than FLAG_BYTES per step and direction, or a batch
#: of more than FLAG_BATCH samples (more patients than most cohorts hold: every epoch one partial batch)
FLAG_BYTES = 64e6
FLAG_BATCH = 4096
_KEY = re.compile(r"^(\(top level\)|\(YAML\)|[A-Za-z_][\w-]*(?:\[\d+\])?(?:\.[\w-]+(?:\[\d+\])?)*): ")

@dataclass
class Validation:
    """The engine's verdict on an experiment mapping: an experiment and a compiled plan, or the CLI's error."""

    experiment: Experiment | None = None
    plan: Plan | None = None
    error: str | None = None
    key: str | None = None  # where the error is: a key path (sites[1].modalities.image.shape), or None
    flags: list[str] = field(default_factory=list)  # valid, but worth a second look before launching

    @property
    def ok(self) -> bool:
        return self.error is None


def cli_error(exc: BaseException | str, command: str = "run") -> str:
    """The error exactly as ``medsplit COMMAND`` prints it (see ``sites.cli.main``)."""
    return f"medsplit {command}: error: {exc}"


def site_parties(preset: str, sites: int) -> tuple[str, ...]:
    """The site parties of a preset for ``sites`` sites (from the preset registry)."""
    spec = PRESETS[preset]
    return tuple(spec.site_parties(max(sites, spec.min_sites)))


def default_modality(label: str) -> tuple[str, dict[str, Any]]:
    """A new data key of kind ``label`` (KINDS): its key and entry, shaped as `medsplit synth` writes it."""
    kind, dicom = KINDS[label]
    if kind == "table":
        return "ehr", {"kind": "table", "shape": [ehr_feature_dim()]}
    return "image", {"kind": "dicom", "modality": dicom, "shape": [1, 32, 32]}


def _site(i: int, party: str, keys: tuple[str, ...], labels: list[str]) -> dict[str, Any]:
    mods = dict(default_modality("table" if key == "ehr" else "CT") for key in keys)
    return {"name": f"site_{i + 1}", "config": f"site_{i + 1}/site.yaml", "party": party, "modalities": mods,
            "labels": list(labels)}


def default_experiment(preset: str) -> dict[str, Any]:
    """A valid experiment for a preset: its synthetic cohort's sites, default topology knobs and training."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'", hint=f"one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    layout = spec.site_data(spec.cohort_sites(3))
    sites = [_site(i, party, keys, list(labels)) for i, (party, (keys, labels)) in enumerate(layout.items())]
    defaults = knob_defaults()
    return {"experiment": f"{preset}-study", "seed": 0,
            "topology": {"preset": preset, **{k: defaults[k] for k in spec.knobs}},
            "training": {"epochs": 5, "batch_size": 32, "lr": 0.001},
            "sites": sites}


def knob_defaults() -> dict[str, Any]:
    """Every topology knob's default (the presets' own), as YAML writes it."""
    defaults = PresetConfig()
    return {k: list(v) if isinstance(v, tuple) else v for k in KNOBS for v in [getattr(defaults, k)]}


def validate(data: Mapping[str, Any], path: str | Path | None = None) -> Validation:
    """Parse, build and compile exactly as the CLI does; a refusal carries the CLI's error text and its key."""
    where = Path(path).resolve() if path else None
    try:
        experiment = parse_experiment(data, where)
        plan = compile_topology(experiment.build_topology())
    except MedsplitError as exc:
        return Validation(error=cli_error(exc), key=error_key(str(exc), where, data))
    except Exception as exc:  # noqa: BLE001 - a value the engine did not anticipate: shown as it is, not hidden
        return Validation(error=cli_error(f"{type(exc).__name__}: {exc}"))
    return Validation(experiment, plan, flags=flags(plan, experiment.training.batch_size))


def error_key(message: str, path: Path | None = None, data: Mapping[str, Any] | None = None) -> str | None:
    """The key an engine error is about (``FILE: KEY: PROBLEM``), or the site it names (``sites[i]``)."""
    text = str(message)
    if path is not None and text.startswith(f"{path}: "):
        text = text[len(str(path)) + 2:]
    m = _KEY.match(text)
    if m:
        return m.group(1)
    sites = (data or {}).get("sites")
    named = []  # (where in the message, site index): the site named first is the one the message is about
    for i, site in enumerate(sites if isinstance(sites, list) else []):
        if isinstance(site, Mapping):
            for n in {str(site.get("name")), str(site.get("party") or site.get("name"))}:
                m = re.search(rf"(?:site|party) '{re.escape(n)}'|'{re.escape(n)}' holds", text)
                if m:
                    named.append((m.start(), i))
    return f"sites[{min(named)[1]}]" if named else None


def flags(plan: Plan, batch_size: int) -> list[str]:
    """What the engine accepts but a reader should check: a huge batch, a cut moving more than FLAG_BYTES a step."""
    out = []
    if batch_size > FLAG_BATCH:
        out.append(f"training.batch_size: {batch_size} samples per step is more than {FLAG_BATCH}: more patients than "
                   "most sites hold, so each epoch would be one partial batch; check the batch size")
    for e in plan.edges.values():
        per_step = _FLOAT32 * batch_size * math.prod(e.shape)
        if per_step > FLAG_BYTES:
            out.append(f"training.batch_size: {batch_size} makes cut '{e.name}' carry {fmt_bytes(per_step)} per step "
                       f"each way ({(batch_size, *e.shape)} float32), held in memory until its gradient returns; "
                       "check the batch size")
    return out


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
