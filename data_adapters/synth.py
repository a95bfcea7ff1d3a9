"""Synthetic hospital cohorts as real files: DICOM images, an EHR CSV and a site YAML per site, plus experiment.yaml."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medsplit.errors import ConfigError
from medsplit.topology.presets import PRESETS

from .synth_dicom import SOFT_TISSUE_WINDOW, Subject, scanner, write_images

__all__ = ["synth_cohort", "SynthResult", "EHR_NUMERIC", "EHR_CATEGORICAL", "ehr_feature_dim", "site_yaml",
           "image_pipeline"]

EHR_NUMERIC = ("age", "crp", "wbc", "lactate")
# Declared vocabularies, so that every site encodes the same feature vector length
EHR_CATEGORICAL = {"sex": ("F", "M"), "smoker": ("current", "former", "never")}
LABELS = ("diagnosis", "mortality")


class _Dumper(yaml.SafeDumper):
    """Short lists on one line, and no &anchors when two sections hold equal lists."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(list, lambda d, v: d.represent_sequence(
    "tag:yaml.org,2002:seq", v, flow_style=all(isinstance(x, (str, int, float)) for x in v)))


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def site_yaml(path: Path, cfg: dict[str, Any], header: str) -> None:
    """Write a site YAML (or experiment YAML) with short lists on one line, after ``header`` comment lines."""
    path.write_text(header + _yaml(cfg), encoding="utf-8")


def image_pipeline(modality: str) -> dict[str, Any]:
    """The pipeline overrides a synthetic site reads its images with: CT in the soft-tissue window, where the
    synthetic lesion is (see ``SOFT_TISSUE_WINDOW``); other modalities keep their defaults."""
    return {"window": list(SOFT_TISSUE_WINDOW)} if modality == "CT" else {}


def ehr_feature_dim() -> int:
    """Standardized numeric columns plus one-hot categories, each with one slot for unseen values."""
    return len(EHR_NUMERIC) + sum(len(v) + 1 for v in EHR_CATEGORICAL.values())


@dataclass(frozen=True)
class SynthResult:
    out: Path
    experiment: Path
    site_configs: dict[str, Path]
    patients: dict[str, list[str]]  # site -> patient IDs it holds (for tests; IDs are synthetic)


@dataclass(frozen=True)
class _Patient:
    pid: str
    age: float
    sex: str
    smoker: str
    diagnosis: int
    mortality: int
    severity: float
    crp: float
    wbc: float
    lactate: float
    lesion: tuple[float, float, float]  # (row, col) centre as a fraction of the body, radius in pixels
    benign_spot: bool  # some healthy patients show a faint benign spot: not trivially separable

    def subject(self) -> Subject:
        strength = 1.0 + self.severity if self.diagnosis else 0.3 if self.benign_spot else 0.0
        return Subject(self.pid, self.sex, self.age, self.lesion, strength)


def _patient(seed: int, index: int, pid: str, age_mean: float) -> _Patient:
    """Everything about a patient follows from (seed, index): two sites holding them agree on it."""
    rng = np.random.default_rng([seed, 7, index])
    age = float(np.clip(rng.normal(age_mean, 12.0), 18, 95))
    sex = "M" if rng.random() < 0.5 else "F"
    smoker = ("current", "former", "never")[int(rng.choice(3, p=[0.25, 0.25, 0.5]))]
    # one latent outcome drives the label, the lesion in the image and the labs
    logit = -0.6 + 0.04 * (age - 60) + 0.7 * (smoker == "current") + 0.3 * (sex == "M") + rng.normal(0, 0.8)
    diagnosis = int(logit > 0)
    severity = float(abs(rng.normal(1.0, 0.3))) if diagnosis else 0.0
    m_logit = -2.4 + 2.2 * diagnosis + 0.05 * (age - 60) + 0.8 * severity + rng.normal(0, 0.6)
    mortality = int(rng.random() < 1 / (1 + np.exp(-m_logit)))
    # labs move with the outcome but overlap between groups, as real ones do
    crp = float(np.exp(1.2 + 0.8 * severity + rng.normal(0, 0.7)))
    wbc = float(max(1.0, 7.5 + 1.5 * diagnosis + rng.normal(0, 2.2)))
    lactate = float(max(0.3, 1.1 + 0.3 * diagnosis + 0.6 * mortality + rng.normal(0, 0.5)))
    lesion = (float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.07, 0.12)))
    return _Patient(pid, round(age, 1), sex, smoker, diagnosis, mortality, severity, round(crp, 2), round(wbc, 2),
                    round(lactate, 2), lesion, bool(rng.random() < 0.15))


def synth_cohort(out: str | os.PathLike, *, sites: int = 3, patients: int = 200, seed: int = 0,
                 layout: str = "horizontal", slices: int = 1, size: int = 32, overlap: float = 0.8,
                 image_modality: str = "CT", val_fraction: float = 0.2) -> SynthResult:
    """Write a cohort under ``out``; returns the paths. Same arguments, same bytes.

    horizontal: every site holds images and EHR (and both labels) of its own patients.
    vertical: site_1 holds CT, site_2 the EHR and the labels, site_3.. MR; ``overlap`` of each
    site's patients are shared by all sites, the rest are its own.
    """
    if layout not in ("horizontal", "vertical"):
        raise ConfigError(f"layout must be horizontal or vertical, got {layout!r}")
    if sites < (2 if layout == "vertical" else 1) or patients < 1 or slices < 1 or size < 8:
        raise ConfigError("need sites >= 1 (2 for vertical), patients >= 1, slices >= 1, size >= 8")
    image_modality = image_modality.upper()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"site_{i + 1}" for i in range(sites)]
    rng = np.random.default_rng([seed, 1])
    n_common = int(round(overlap * patients)) if layout == "vertical" else 0
    n_own = patients - n_common
    total = n_common + n_own * sites if layout == "vertical" else patients * sites
    ids = [f"{x:08d}" for x in rng.choice(10**8, size=total, replace=False)]  # MRN-like, zero-padded text
    index = {pid: i for i, pid in enumerate(ids)}
    held: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        if layout == "horizontal":
            held[name] = ids[i * patients:(i + 1) * patients]
        else:
            held[name] = ids[:n_common] + ids[n_common + i * n_own:n_common + (i + 1) * n_own]
    scanners = [scanner(i, sites) for i in range(sites)]
    # a patient's home site sets their age mix; shared (vertical) patients live at site_1
    home: dict[str, int] = {}
    for i, n in enumerate(names):
        for pid in held[n]:
            home.setdefault(pid, i)
    cohort = {pid: _patient(seed, index[pid], pid, scanners[home[pid]].age_mean) for pid in ids}
    site_modalities: dict[str, dict[str, Any]] = {}
    configs: dict[str, Path] = {}
    for i, name in enumerate(names):
        site_dir = out / name
        site_dir.mkdir(parents=True, exist_ok=True)
        pts = [cohort[pid] for pid in held[name]]
        roles: tuple[str, ...]
        if layout == "horizontal":
            roles, modality = ("image", "ehr"), image_modality
        else:
            roles = ("ehr",) if i == 1 else ("image",)
            modality = "CT" if i == 0 else "MR"
        mods: dict[str, Any] = {}
        spatial = [size, size] if slices == 1 else [slices, size, size]
        if "image" in roles:
            write_images(site_dir, [p.subject() for p in pts], scanners[i], name, modality, spatial, seed, i)
            mods["image"] = {"kind": "dicom", "source": "manifest.csv", "modality": modality, "spatial_size": spatial}
            if image_pipeline(modality):
                mods["image"]["pipeline"] = image_pipeline(modality)
        owns_labels = layout == "horizontal" or i == 1
        if "ehr" in roles:
            _write_ehr(site_dir / "ehr.csv", pts, seed, i, with_labels=owns_labels)
            mods["ehr"] = {"kind": "table", "source": "ehr.csv", "id_column": "patient_id",
                           "numeric": list(EHR_NUMERIC),
                           "categorical": {k: list(v) for k, v in EHR_CATEGORICAL.items()},
                           "missing": {"numeric": "median", "categorical": "most_frequent"}}
        cfg: dict[str, Any] = {"site": name, "split": {"val_fraction": val_fraction, "seed": seed},
                               "modalities": mods}
        if owns_labels:
            cfg["labels"] = {lab: {"kind": "binary", "source": "ehr"} for lab in LABELS}
        configs[name] = site_dir / "site.yaml"
        header = (f"# site {name}, written by `medsplit synth --seed {seed} --layout {layout}`\n"
                  "# paths are relative to this file's folder; check it with: medsplit data check --config site.yaml\n")
        site_yaml(configs[name], cfg, header)
        site_modalities[name] = {
            k: ({"kind": "dicom", "modality": v["modality"], "shape": [1, *spatial]} if v["kind"] == "dicom"
                else {"kind": "table", "shape": [ehr_feature_dim()]}) for k, v in mods.items()}
    owners = names if layout == "horizontal" else [names[1]]
    experiment = {
        "experiment": f"synth-{layout}-{sites}x{patients}-seed{seed}",
        "seed": seed,
        "topology": {"preset": _preset_for(layout, sites)},
        "sites": [{"name": n, "config": f"{n}/site.yaml", "modalities": site_modalities[n],
                   "labels": list(LABELS) if n in owners else []} for n in names],
    }
    exp_path = out / "experiment.yaml"
    site_yaml(exp_path, experiment, "# medsplit experiment: the sites of one training run and who holds what\n")
    return SynthResult(out=out, experiment=exp_path, site_configs=configs, patients=held)


def _preset_for(layout: str, sites: int) -> str:
    """The first preset in the registry with this data layout that takes ``sites`` sites (else the first)."""
    fits = [name for name, spec in PRESETS.items() if spec.layout == layout]
    return next((name for name in fits if PRESETS[name].takes(sites)), fits[0])


def _write_ehr(path: Path, pts: list[_Patient], seed: int, site_index: int, *, with_labels: bool) -> None:
    rng = np.random.default_rng([seed, 5, site_index])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", *EHR_NUMERIC, *EHR_CATEGORICAL, *(LABELS if with_labels else ())])
        for p in pts:
            labs = {"crp": p.crp, "wbc": p.wbc, "lactate": p.lactate}
            # about 5% of lab values are missing, as in real exports
            cells = [p.age, *("" if rng.random() < 0.05 else labs[c] for c in EHR_NUMERIC[1:])]
            w.writerow([p.pid, *cells, p.sex, p.smoker, *((p.diagnosis, p.mortality) if with_labels else ())])
