"""Synthetic DICOM: a patient's image (CT, MR, CR or DX; one slice or a series) with a lesion, written as real files."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

__all__ = ["Scanner", "Subject", "scanner", "write_images", "SOFT_TISSUE_WINDOW", "PROJECTION"]

#: the Hounsfield window synthetic CT sites read their images in. The lesion is +60..180 HU over 40 HU soft
#: tissue: under the lung-to-soft-tissue default [-1000, 400] it spans ~5% of the intensity range, too faint for
#: a small CNN to learn a second task from in a few epochs; in this soft-tissue window it spans ~30%.
SOFT_TISSUE_WINDOW = (-160.0, 240.0)
#: projection radiographs: one 2D image, no slices
PROJECTION = ("CR", "DX")
_SOP = {"CT": CTImageStorage, "MR": MRImageStorage, "CR": ComputedRadiographyImageStorage,
        "DX": DigitalXRayImageStorageForPresentation}


@dataclass(frozen=True)
class Scanner:
    """A site's scanner: calibration offset, noise and gain, so that sites differ (non-IID) as real ones do."""

    name: str
    offset: float  # HU (CT) or fraction of tissue signal (MR, radiographs)
    noise: float  # HU (CT) or signal units
    gain: float
    age_mean: float


def scanner(i: int, n: int) -> Scanner:
    c = i - (n - 1) / 2
    return Scanner(name=f"SynthScan {chr(65 + i % 26)}", offset=25.0 * c, noise=10.0 + 6.0 * i, gain=1.0 + 0.1 * c,
                   age_mean=52.0 + 8.0 * i)


@dataclass(frozen=True)
class Subject:
    """What an image shows of a patient: a lesion at ``lesion`` (row and column centre as fractions of the body,
    radius as a fraction of the image) of ``strength`` (0: none; 1: typical; larger: more severe)."""

    pid: str
    sex: str
    age: float
    lesion: tuple[float, float, float]
    strength: float
    labels: Mapping[str, str] = field(default_factory=dict)  # label columns of the manifest, as text


def _volume(s: Subject, sc: Scanner, modality: str, shape: tuple[int, int, int], rng: np.random.Generator
            ) -> np.ndarray:
    """(D, H, W): HU (CT) or signal units (MR, CR, DX); a body, two lungs, and the subject's lesion."""
    slices, rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    yy, xx = yy / rows, xx / cols
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.36) ** 2 <= 1.0
    lungs = (((xx - 0.33) / 0.11) ** 2 + ((yy - 0.47) / 0.2) ** 2 <= 1.0) | (
        ((xx - 0.67) / 0.11) ** 2 + ((yy - 0.47) / 0.2) ** 2 <= 1.0)
    air, tissue, lung, amp = {"CT": (-1000.0, 40.0, -850.0, 60.0), "MR": (0.0, 400.0, 60.0, 250.0)}.get(
        modality, (100.0, 1800.0, 600.0, 400.0))  # radiographs: an opacity in a dark lung field
    base = np.where(body, tissue, air).astype(np.float32)
    base[lungs & body] = lung
    vol = np.repeat(base[None], slices, axis=0)
    if s.strength > 0:
        z = np.arange(slices, dtype=np.float32)[:, None, None]
        r0, c0, rad = s.lesion
        r = rad * min(rows, cols)
        d2 = ((yy - r0) ** 2 * rows**2 + (xx - c0) ** 2 * cols**2)[None] + ((z - (slices - 1) / 2) * 2.0) ** 2
        vol = vol + amp * s.strength * np.exp(-d2 / (2 * r * r)) * body[None]
    if modality == "CT":
        vol = vol + sc.offset * body[None] + rng.normal(0, sc.noise, vol.shape)
    else:
        scale = tissue / 400.0
        vol = np.abs(vol * sc.gain * (1 + sc.offset / 400.0) + rng.normal(0, sc.noise * scale, vol.shape))
    return vol.astype(np.float32)


def _write_series(folder: Path, single: bool, s: Subject, sc: Scanner, site: str, modality: str, vol: np.ndarray,
                  seed: int, study_date: date) -> str:
    """Write one series; returns the manifest path (the file for one slice, else the folder)."""
    uid = lambda *parts: generate_uid(entropy_srcs=[str(seed), site, s.pid, *map(str, parts)])  # noqa: E731
    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame")
    spacing, thickness = 1.2 * 32 / vol.shape[1], 5.0
    sop_class = _SOP[modality]
    if modality == "CT":
        stored = np.clip(np.round(vol + 1024.0), -32768, 32767).astype(np.int16)  # HU = stored - 1024
        intercept = -1024.0
    else:
        stored = np.clip(np.round(vol), 0, 65535).astype(np.uint16)
        intercept = 0.0
    (folder.parent if single else folder).mkdir(parents=True, exist_ok=True)
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
        ds.ImageType = ["ORIGINAL", "PRIMARY"] + (["AXIAL"] if modality not in PROJECTION else [])
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.Manufacturer, ds.InstitutionName = "medsplit synth", site
        ds.ManufacturerModelName = sc.name
        ds.ReferringPhysicianName = ""
        ds.PatientName = f"SYNTH^{s.pid}"
        ds.PatientID = s.pid
        ds.PatientBirthDate = ""
        ds.PatientSex = s.sex
        ds.PatientAge = f"{int(s.age):03d}Y"
        ds.BodyPartExamined = "CHEST"
        if modality == "CT":
            ds.KVP, ds.ConvolutionKernel = 120, "STANDARD"
        elif modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
            ds.MRAcquisitionType = "2D"
            ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 3000.0, 90.0, 1.5
            ds.ImagingFrequency = 63.87
        else:  # a PA chest radiograph: no patient orientation, no slice position
            ds.KVP, ds.ViewPosition, ds.PatientOrientation = 120, "PA", ["L", "F"]
            ds.ImagerPixelSpacing = [round(spacing, 4), round(spacing, 4)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        if modality not in PROJECTION:
            ds.SliceThickness = thickness
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
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1.0
        ds.RescaleType = "HU" if modality == "CT" else "US"
        ds.WindowCenter, ds.WindowWidth = {"CT": (40, 400), "MR": (400, 800)}.get(modality, (1000, 2000))
        ds.PixelData = stored[k].tobytes()
        ds.save_as(name, enforce_file_format=True)
    return folder.with_suffix(".dcm").name if single else folder.name


def write_images(folder: Path, subjects: Sequence[Subject], sc: Scanner, site: str, modality: str,
                 spatial: Sequence[int], seed: int, stream: int, label_columns: Sequence[str] = ()) -> None:
    """One study per subject under ``folder/dicom`` (a file per 2D image; a folder per 3D series) and
    ``folder/manifest.csv`` (patient_id, study_id, path, and ``label_columns`` from each subject's labels)."""
    rng = np.random.default_rng([seed, 3, stream])
    shape = (1, *spatial) if len(spatial) == 2 else tuple(spatial)
    rows = []
    for n, s in enumerate(subjects, start=1):
        vol = _volume(s, sc, modality, shape, rng)  # type: ignore[arg-type]
        study_date = date(2020, 1, 1) + timedelta(days=int(rng.integers(0, 1500)))
        # file names carry no patient ID: rejected paths appear in data reports
        rel = _write_series(folder / "dicom" / f"img{n:05d}", len(spatial) == 2, s, sc, site, modality, vol, seed,
                            study_date)
        rows.append([s.pid, generate_uid(entropy_srcs=[str(seed), site, s.pid, "study"]), f"dicom/{rel}",
                     *(s.labels.get(c, "") for c in label_columns)])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "study_id", "path", *label_columns])
        w.writerows(rows)
