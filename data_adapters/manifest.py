"""Which image belongs to which patient: a CSV manifest, or studies discovered by walking a folder."""

from __future__ import annotations

import csv
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medsplit.errors import ConfigError, DataError
from medsplit.suggest import did_you_mean, listing

from .report import Rejected

__all__ = ["ImageRecord", "read_manifest", "discover_studies", "write_manifest", "MANIFEST_COLUMNS"]

#: required and optional manifest columns; any other column may hold labels
MANIFEST_COLUMNS = ("patient_id", "study_id", "path")


@dataclass(frozen=True)
class ImageRecord:
    """One image: a DICOM file, a series folder, or the slice files of one series."""

    patient_id: str
    paths: tuple[str, ...]
    study_id: str = ""
    labels: dict[str, Any] = field(default_factory=dict, compare=False)
    where: str = ""  # the file or series folder, as the report names it
    origin: str = ""  # "manifest.csv line 7" for manifest rows

    @property
    def source(self) -> str | list[str]:
        """What LoadImage takes: one path, or a list of slice files."""
        return self.paths[0] if len(self.paths) == 1 else list(self.paths)


def read_manifest(path: str | os.PathLike, *, label_columns: Sequence[str] = (),
                  config: str | None = None, key: str | None = None) -> tuple[list[ImageRecord], list[dict[str, str]]]:
    """Read a manifest CSV with columns ``patient_id``, ``path`` (file or series folder) and optional
    ``study_id`` and label columns. Relative paths are relative to the manifest's folder.

    Returns the records and the rows set aside (no patient ID). Missing columns are a ``ConfigError``.
    """
    path = Path(path)
    where = f" (declared in {config}, key {key})" if config else ""
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist{where}",
                          hint="fix the source path; relative paths are relative to the site YAML's folder")
    try:
        # IDs stay text: '00123' and '123' are different patients
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"manifest {path} is empty",
                        hint="write a header line: patient_id,study_id,path,<labels>") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"manifest {path} is not a readable CSV: {' '.join(str(e).split())[:200]}") from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in ("patient_id", "path", *label_columns):
        if col not in df.columns:
            what = "label column" if col in label_columns else "column"
            raise ConfigError(f"{what} {col!r} is missing from manifest {path}{did_you_mean(col, df.columns)}{where}",
                              hint=f"its columns are: {listing(df.columns)}")
    base = path.parent
    records, rejected = [], []
    for i, row in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        r = dict(zip(df.columns, row, strict=False))
        where_row = f"{path.name} line {i}"
        pid = r.get("patient_id")
        if pid is None or pd.isna(pid) or not str(pid).strip():
            rejected.append({"path": where_row, "reason": "missing_id", "detail": "no patient_id on this line"})
            continue
        p = r.get("path")
        if p is None or pd.isna(p) or not str(p).strip():
            rejected.append({"path": where_row, "reason": "missing", "detail": "no path on this line"})
            continue
        full = Path(str(p).strip())
        full = full if full.is_absolute() else base / full
        study = r.get("study_id") if "study_id" in df.columns else ""
        records.append(ImageRecord(
            patient_id=str(pid).strip(), paths=(str(full),),
            study_id="" if study is None or pd.isna(study) else str(study).strip(),
            labels={c: (None if pd.isna(r[c]) else r[c]) for c in label_columns}, where=str(full), origin=where_row))
    return records, rejected


def write_manifest(records: Sequence[ImageRecord], path: str | os.PathLike,
                   *, label_columns: Sequence[str] = ()) -> None:
    """Write records as a manifest; series given as slice lists are written as their common folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*MANIFEST_COLUMNS, *label_columns])
        for r in records:
            target = r.paths[0] if len(r.paths) == 1 else os.path.commonpath(r.paths)
            try:
                target = os.path.relpath(target, path.parent)
            except ValueError:  # another drive on Windows
                pass
            w.writerow([r.patient_id, r.study_id, target, *(r.labels.get(c, "") for c in label_columns)])


def discover_studies(root: str | os.PathLike, *, modality: str | None = None
                     ) -> tuple[list[ImageRecord], list[dict[str, str]]]:
    """Walk ``root`` and group DICOM files by patient, StudyInstanceUID and SeriesInstanceUID.

    Only headers are read (``stop_before_pixels``). One record per series; a patient's series
    come largest first, so that a keep-first duplicate rule keeps the main acquisition rather
    than a scout. Files that are not DICOM, not images, or of another modality are returned
    as rejected entries, one per series.
    """
    from .dicom import _COMPATIBLE, _NON_IMAGE_MODALITIES, _sop_name, read_header  # shared rules, one place

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", hint="give a folder that contains DICOM files")
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    rejected: list[dict[str, str]] = []
    skipped: dict[tuple[str, str], list[str]] = defaultdict(list)  # (reason, series) -> files
    modalities: dict[tuple[str, str, str], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            f = os.path.join(dirpath, name)
            if not os.path.isfile(f):  # pipes and devices would block the reader
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # malformed headers are reported below, not warned about
                    ds = read_header(f)
            except Rejected as r:
                rejected.append({"path": f, "reason": r.reason, "detail": r.detail})
                continue
            if "DirectoryRecordSequence" in ds:
                continue  # a DICOMDIR indexes the media; the images are found by walking
            sop = _sop_name(ds)
            mod = str(ds.get("Modality", "") or "").upper()
            series = str(ds.get("SeriesInstanceUID", "") or f)
            if (sop and "Image Storage" not in sop and sop != "Parametric Map Storage") or (
                    not sop and mod in _NON_IMAGE_MODALITIES):
                skipped[("not_an_image", f"{sop or mod or 'object'} series {series}")].append(f)
                continue
            if modality and mod and mod not in _COMPATIBLE.get(modality.upper(), {modality.upper()}):
                skipped[("wrong_modality", f"Modality {mod} (expected {modality}) series {series}")].append(f)
                continue
            pid = str(ds.get("PatientID", "") or "").strip()
            if not pid:
                rejected.append({"path": f, "reason": "missing_id", "detail": "no PatientID in the header"})
                continue
            gkey = (pid, str(ds.get("StudyInstanceUID", "") or ""), series)
            groups[gkey].append(f)
            modalities[gkey] = mod
    for (reason, what), files in skipped.items():
        rejected.append({"path": _common_place(files), "reason": reason,
                         "detail": f"{what.split(' series ')[0]}: {len(files)} file(s) skipped"})
    ranked = []
    for (pid, study, _series), files in groups.items():
        files = sorted(files)
        folder = os.path.dirname(files[0])
        whole_folder = all(os.path.dirname(f) == folder for f in files) and len(files) == sum(
            1 for n in os.listdir(folder) if not n.startswith(".") and os.path.isfile(os.path.join(folder, n)))
        paths = (folder,) if whole_folder and len(files) > 1 else tuple(files)
        rec = ImageRecord(patient_id=pid, paths=paths, study_id=study, where=folder if len(files) > 1 else files[0])
        ranked.append(((pid, -len(files), study, paths), rec))
    return [rec for _, rec in sorted(ranked, key=lambda t: t[0])], rejected


def _common_place(files: list[str]) -> str:
    return files[0] if len(files) == 1 else os.path.commonpath(files)
