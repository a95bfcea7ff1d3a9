"""Synthetic hospital cohorts as real files: DICOM images, an EHR CSV and a site YAML per site, plus experiment.yaml."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from medsplit.errors import ConfigError
from medsplit.topology.presets import PRESETS

__all__ = ["synth_cohort", "SynthResult", "EHR_NUMERIC", "EHR_CATEGORICAL", "ehr_feature_dim"]

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
                    round(lactate, 2), lesion)


@dataclass(frozen=True)
class _Scanner:
    """The site's shift: calibration offset, noise and gain, so horizontal partitions are non-IID."""

    name: str
    offset: float  # HU (CT) or fraction of tissue signal (MR)
    noise: float  # HU (CT) or signal units (MR)
    gain: float
    age_mean: float


def _scanner(i: int, n: int) -> _Scanner:
    c = i - (n - 1) / 2
    return _Scanner(name=f"SynthScan {chr(65 + i)}", offset=25.0 * c, noise=10.0 + 6.0 * i, gain=1.0 + 0.1 * c,
                    age_mean=52.0 + 8.0 * i)


def _volume(p: _Patient, sc: _Scanner, modality: str, size: int, slices: int, rng: np.random.Generator) -> np.ndarray:
    """(slices, size, size) in HU (CT) or signal units (MR): body, lungs, and a lesion if diagnosed."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.36) ** 2 <= 1.0
    lungs = (((xx - 0.33) / 0.11) ** 2 + ((yy - 0.47) / 0.2) ** 2 <= 1.0) | (
        ((xx - 0.67) / 0.11) ** 2 + ((yy - 0.47) / 0.2) ** 2 <= 1.0)
    if modality == "CT":
        air, tissue, lung, lesion_amp = -1000.0, 40.0, -850.0, 60.0 + 60.0 * p.severity
    else:
        air, tissue, lung, lesion_amp = 0.0, 400.0, 60.0, 250.0 + 250.0 * p.severity
    base = np.where(body, tissue, air).astype(np.float32)
    base[lungs & body] = lung
    vol = np.repeat(base[None], slices, axis=0)
    z = np.arange(slices, dtype=np.float32)[:, None, None]
    zc = (slices - 1) / 2
    r0, c0, rad = p.lesion
    r = rad * size
    if p.diagnosis or rng.random() < 0.15:  # some healthy patients show a faint benign spot: not trivially separable
        amp = lesion_amp if p.diagnosis else 0.3 * lesion_amp
        d2 = ((yy * size - r0 * size) ** 2 + (xx * size - c0 * size) ** 2)[None] + ((z - zc) * 2.0) ** 2
        vol = vol + amp * np.exp(-d2 / (2 * r * r)) * body[None]
    if modality == "CT":
        vol = vol + sc.offset * body[None] + rng.normal(0, sc.noise, vol.shape)
    else:
        vol = np.abs(vol * sc.gain * (1 + sc.offset / 400.0) + rng.normal(0, sc.noise, vol.shape))  # Rician-like
    return vol.astype(np.float32)


def _write_series(folder: Path, single: bool, p: _Patient, sc: _Scanner, site: str, modality: str,
                  vol: np.ndarray, seed: int, study_date: date) -> str:
    """Write one series; returns the manifest path (the file for one slice, else the folder)."""
    uid = lambda *parts: generate_uid(entropy_srcs=[str(seed), site, p.pid, *map(str, parts)])  # noqa: E731
    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame")
    spacing, thickness = 1.2 * 32 / vol.shape[1], 5.0
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    if modality == "CT":
        stored = np.clip(np.round(vol + 1024.0), -32768, 32767).astype(np.int16)  # HU = stored - 1024
        slope, intercept = 1.0, -1024.0
    else:
        stored = np.clip(np.round(vol), 0, 65535).astype(np.uint16)
        slope, intercept = 1.0, 0.0
    (folder.parent if single else folder).mkdir(parents=True, exist_ok=True)
    first = None
    for k in range(vol.shape[0]):
        sop_uid = uid("sop", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        name = folder.with_suffix(".dcm") if single else folder / f"IM{k + 1:04d}.dcm"
        ds = FileDataset(str(name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.Manufacturer, ds.InstitutionName = "medsplit synth", site
        ds.ManufacturerModelName = sc.name
        ds.ReferringPhysicianName = ""
        ds.PatientName = f"SYNTH^{p.pid}"
        ds.PatientID = p.pid
        ds.PatientBirthDate = ""
        ds.PatientSex = p.sex
        ds.PatientAge = f"{int(p.age):03d}Y"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = thickness
        if modality == "CT":
            ds.KVP, ds.ConvolutionKernel = 120, "STANDARD"
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
            ds.MRAcquisitionType = "2D"
            ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 3000.0, 90.0, 1.5
            ds.ImagingFrequency = 63.87
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-spacing * vol.shape[2] / 2, -spacing * vol.shape[1] / 2, k * thickness]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = k * thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(vol.shape[1]), int(vol.shape[2])
        ds.PixelSpacing = [round(spacing, 4), round(spacing, 4)]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if modality == "CT" else 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
        ds.RescaleType = "HU" if modality == "CT" else "US"
        ds.WindowCenter, ds.WindowWidth = (40, 400) if modality == "CT" else (400, 800)
        ds.PixelData = stored[k].tobytes()
        ds.save_as(name, enforce_file_format=True)
        first = first or name
    return first.name if single else folder.name


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
    scanners = [_scanner(i, sites) for i in range(sites)]
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
        if layout == "horizontal":
            roles, modality = ("image", "ehr"), image_modality
        else:
            roles = ("ehr",) if i == 1 else ("image",)
            modality = "CT" if i == 0 else "MR"
        mods: dict[str, Any] = {}
        spatial = [size, size] if slices == 1 else [slices, size, size]
        if "image" in roles:
            _write_images(site_dir, pts, scanners[i], name, modality, size, slices, seed, i)
            mods["image"] = {"kind": "dicom", "source": "manifest.csv", "modality": modality, "spatial_size": spatial}
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
        configs[name].write_text(header + _yaml(cfg), encoding="utf-8")
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
    exp_path.write_text("# medsplit experiment: the sites of one training run and who holds what\n"
                        + _yaml(experiment), encoding="utf-8")
    return SynthResult(out=out, experiment=exp_path, site_configs=configs, patients=held)


def _preset_for(layout: str, sites: int) -> str:
    """The first preset in the registry with this data layout that takes ``sites`` sites (else the first)."""
    fits = [name for name, spec in PRESETS.items() if spec.layout == layout]
    return next((name for name in fits if PRESETS[name].takes(sites)), fits[0])


def _write_images(site_dir: Path, pts: list[_Patient], sc: _Scanner, site: str, modality: str, size: int,
                  slices: int, seed: int, site_index: int) -> None:
    rng = np.random.default_rng([seed, 3, site_index])
    rows = []
    for n, p in enumerate(pts, start=1):
        vol = _volume(p, sc, modality, size, slices, rng)
        study_date = date(2020, 1, 1) + timedelta(days=int(rng.integers(0, 1500)))
        # file names carry no patient ID: rejected paths appear in data reports
        rel = _write_series(site_dir / "dicom" / f"img{n:05d}", slices == 1, p, sc, site, modality, vol, seed,
                            study_date)
        rows.append([p.pid, generate_uid(entropy_srcs=[str(seed), site, p.pid, "study"]), f"dicom/{rel}"])
    with open(site_dir / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "study_id", "path"])
        w.writerows(rows)


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
