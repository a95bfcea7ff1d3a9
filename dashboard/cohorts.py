"""What data Launch synthesises for a design, said before it starts: `medsplit synth --for` (files for the design
as written) where this install's synth has it, else the fixed synthetic cohort, only when the design fits it."""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_adapters.synth import synth_cohort
from medsplit.topology.presets import PRESETS

__all__ = ["DataPlan", "data_plan", "synth_for_available", "synth_for_defined", "cohort_sites", "on_cohort"]


@dataclass
class DataPlan:
    """How Launch makes the design's data (`medsplit synth` with ``args``, or ``synth_cohort(**cohort)``),
    whether the design runs as written on it, and if not, why."""

    how: str  # "for": files for this design; "cohort": the fixed cohort of a layout
    args: list[str]
    cohort: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        if self.how == "for":
            return ("Launch writes synthetic files for this design as written (`medsplit synth --for`): each site "
                    "with its own data keys, shapes and labels. They are never shown here.")
        return (f"Launch writes the synthetic cohort `medsplit synth {' '.join(self.args)}` and runs the design on "
                "it as written: sites, parties, encoders and labels are the design's; the files are the cohort's. "
                "They are never shown here.")


def synth_for_defined(root: str) -> bool:
    """Whether the checkout's command line defines `medsplit synth --for` (read, not run: a page render cannot wait
    for an interpreter to start; the job asks the command itself, ``synth_for_available``)."""
    try:
        return '"--for"' in (Path(root) / "sites" / "cli.py").read_text(encoding="utf-8")
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def synth_for_available(root: str) -> bool:
    """Whether this install's `medsplit synth` writes files for any design (`--for EXP.yaml`)."""
    try:
        out = subprocess.run([sys.executable, "-m", "sites.cli", "synth", "--help"], capture_output=True, text=True,
                             timeout=120, cwd=root, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--for" in out.stdout


@functools.lru_cache(maxsize=32)
def cohort_sites(layout: str, sites: int, image_modality: str) -> tuple[dict[str, Any], ...]:
    """The sites (modalities, shapes, labels) the fixed cohort of ``layout`` holds: written once, tiny, to read
    them from `medsplit synth`'s own output rather than repeat what it writes."""
    with tempfile.TemporaryDirectory(prefix="medsplit-cohort-") as tmp:
        result = synth_cohort(Path(tmp) / "c", sites=sites, patients=2, seed=0, layout=layout,
                              image_modality=image_modality)
        return tuple(yaml.safe_load(result.experiment.read_text())["sites"])


def _image_modality(design: Mapping[str, Any]) -> str:
    mods = [m.get("modality") for s in _sites(design) for m in _mods(s).values() if isinstance(m, Mapping)]
    return "MR" if "MR" in mods and "CT" not in mods else "CT"


def _sites(design: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    sites = design.get("sites")
    return [s for s in sites if isinstance(s, Mapping)] if isinstance(sites, list) else []


def _mods(site: Mapping[str, Any]) -> Mapping[str, Any]:
    mods = site.get("modalities")
    return mods if isinstance(mods, Mapping) else {}


def data_plan(design: Mapping[str, Any], *, patients: int, seed: int, synth_for: bool) -> DataPlan:
    """How Launch will make data for ``design`` (a valid experiment mapping)."""
    if synth_for:
        return DataPlan("for", ["--for", "EXPERIMENT", "--patients", str(patients), "--seed", str(seed)])
    preset = str((design.get("topology") or {}).get("preset") or "")
    spec = PRESETS.get(preset)
    if spec is None:
        return DataPlan("cohort", [], problems=[f"this install's `medsplit synth` writes cohorts for the presets only, "
                                                f"and this design has no preset ('{preset}')"])
    sites = _sites(design)
    layout, modality = spec.layout, _image_modality(design)
    n = max(len(sites), 2 if layout == "vertical" else 1)
    kwargs = {"layout": layout, "sites": n, "patients": patients, "seed": seed, "image_modality": modality}
    args = ["--layout", layout, "--sites", str(n), "--patients", str(patients), "--seed", str(seed)]
    if layout == "horizontal":
        args += ["--image-modality", modality]
    cohort = cohort_sites(layout, n, modality)
    problems = []
    for i, (site, held) in enumerate(zip(sites, cohort, strict=False)):
        name = site.get("name", f"sites[{i}]")
        has = held.get("modalities") or {}
        for key, spec_ in _mods(site).items():
            spec_ = spec_ if isinstance(spec_, Mapping) else {}
            got = has.get(key)
            want = {k: spec_.get(k) for k in ("kind", "modality", "shape")}
            if got is None:
                held_keys = ", ".join(f"{k} ({_fmt(v)})" for k, v in has.items())
                problems.append(f"site '{name}' holds '{key}', but the cohort's {held['name']} holds only {held_keys}")
            elif (got.get("shape"), got.get("kind"), got.get("modality")) != (list(want["shape"] or []),
                                                                           want["kind"] or got.get("kind"),
                                                                           want["modality"] or got.get("modality")):
                problems.append(f"site '{name}' declares {key} as {_fmt(want)}, but the cohort's {held['name']} holds "
                                f"{_fmt(got)}")
        missing = [label for label in site.get("labels") or [] if label not in (held.get("labels") or [])]
        if missing:
            problems.append(f"site '{name}' holds labels {missing}, which the cohort's {held['name']} does not have")
    return DataPlan("cohort", args, kwargs, problems)


def _fmt(spec: Mapping[str, Any]) -> str:
    return " ".join(str(v) for v in (spec.get("modality") or spec.get("kind"), list(spec.get("shape") or [])))


def on_cohort(design: Mapping[str, Any], data_dir: str) -> dict[str, Any]:
    """The design as written, each site reading the cohort's files of its place (``data_dir``/site_N/site.yaml)."""
    out = dict(design)
    out["sites"] = [dict(s, config=f"{data_dir}/site_{i + 1}/site.yaml") for i, s in enumerate(_sites(design))]
    out["server"] = {**dict(design.get("server") or {}), "run_dir": "."}
    return out
