"""A site's data as training reads it: every modality key loaded, aligned by patient, split, reported."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from medsplit.data import LabelHeld, SiteHolding
from medsplit.data import SiteData as EngineData
from medsplit.errors import DataError

from .batches import DatasetSource
from .config import DicomModality, SiteConfig, TableModality
from .ehr import PreparedTable, TableDataset, prepare_table
from .imaging import ImagingDataset, PreparedImaging, prepare_imaging
from .labels import LabelSpec, label_tensor, parse_label_values
from .manifest import ImageRecord, discover_studies, read_manifest
from .report import DataReport

__all__ = ["SiteFiles", "SiteDataset", "open_site_data", "split_of"]


def split_of(patient_id: str, *, seed: int, val_fraction: float) -> str:
    """'train' or 'val' from a seeded hash of the ID alone, so two sites holding a patient agree."""
    digest = hashlib.sha256(f"medsplit-split:{seed}:{patient_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


class SiteDataset(torch.utils.data.Dataset):
    """Samples with every modality key of the site, one per patient: ``{key: tensor, <label>: tensor, "row_id"}``."""

    def __init__(self, data: SiteFiles, row_ids: Sequence[str], *, train: bool) -> None:
        self.row_ids = list(row_ids)
        self.train = train
        self._site = data
        self._parts: list[ImagingDataset | TableDataset] = []
        for prep in data.prepared.values():
            if isinstance(prep, PreparedImaging):
                self._parts.append(prep.dataset(self.row_ids, train=train))
            else:
                self._parts.append(prep.dataset(self.row_ids))

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index)

    def sample(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Row ``index`` with every modality key and label; ``seed`` fixes its random augmentation (images)."""
        rid = self.row_ids[index]
        out: dict[str, Any] = {}
        for part in self._parts:
            sample = part.sample(index, seed) if isinstance(part, ImagingDataset) else part[index]
            out[part.key] = sample[part.key]
        for name, spec in self._site.labels.items():
            out[name] = label_tensor(self._site.label_values[name][rid], spec.kind)
        out["row_id"] = rid
        return out

    def subset(self, row_ids: Sequence[str]) -> SiteDataset:
        """The same samples in the order of ``row_ids`` (e.g. the order agreed by PSI)."""
        have = set(self.row_ids)
        missing = sum(1 for r in row_ids if r not in have)
        if missing:
            raise DataError(f"{missing} of the requested rows are not in this {'train' if self.train else 'val'} split",
                            hint="align on IDs from the same split seed at every site")
        return SiteDataset(self._site, row_ids, train=self.train)


@dataclass
class SiteFiles:
    """What a site trains on. ``train``/``val`` are aligned across modality keys by ``row_id`` (the patient ID)."""

    site: str
    prepared: dict[str, PreparedImaging | PreparedTable]
    labels: dict[str, LabelSpec]
    label_values: dict[str, dict[str, float]]
    splits: dict[str, str]  # row_id -> 'train' | 'val'
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # found, loaded, rejected: what a server may print
    source: str | None = None  # the site YAML it was read with
    kinds: dict[str, str] = field(default_factory=dict)  # key -> "table" | "dicom CT" ...
    train: SiteDataset = field(init=False)
    val: SiteDataset = field(init=False)

    def __post_init__(self) -> None:
        ids = sorted(self.splits)
        self.train = SiteDataset(self, [i for i in ids if self.splits[i] == "train"], train=True)
        self.val = SiteDataset(self, [i for i in ids if self.splits[i] == "val"], train=False)

    @property
    def row_ids(self) -> list[str]:
        """Every usable patient of this site: the input to private set intersection."""
        return sorted(self.splits)

    def holding(self) -> SiteHolding:
        """What this site holds, for the engine's check against the topology (``medsplit.engine.checks``)."""
        labels = {n: LabelHeld(s.kind, s.classes if s.kind == "multiclass" else None,
                               torch.int64 if s.kind == "multiclass" else torch.float32)
                  for n, s in self.labels.items()}
        return SiteHolding(dict(self.shapes), labels, dict(self.kinds), self.source)

    def open(self, keys: Sequence[str], order: Sequence[str] | None = None, *, every_row: bool = False
             ) -> EngineData:
        """The engine's view (``medsplit.data.LocalSite``): batches of ``keys`` from the train and val rows.

        ``order`` (vertical sites: the PSI-agreed patients) restricts the rows and fixes their order; with
        ``every_row`` both splits hold every row, without augmentation (predictions).
        """
        if every_row:
            ids = list(order) if order is not None else self.row_ids
            everything = SiteDataset(self, ids, train=False)
            return EngineData(DatasetSource(everything, keys), DatasetSource(everything, keys))
        train, val = self.align(order) if order is not None else (self.train, self.val)
        return EngineData(DatasetSource(train, keys), DatasetSource(val, keys))

    def align(self, order: Sequence[str]) -> tuple[SiteDataset, SiteDataset]:
        """Train and val datasets restricted to ``order`` (the PSI-agreed patients) and in that order."""
        keep = [r for r in order if r in self.splits]
        if len(keep) != len(order):
            raise DataError(f"{len(order) - len(keep)} agreed patients are not loaded at site {self.site!r}",
                            hint="run the alignment on SiteFiles.row_ids")
        return (self.train.subset([r for r in keep if self.splits[r] == "train"]),
                self.val.subset([r for r in keep if self.splits[r] == "val"]))


def open_site_data(cfg: SiteConfig) -> tuple[SiteFiles, DataReport]:
    """Load every modality key of ``cfg`` exactly as training does; bad records are set aside and reported."""
    report = DataReport(site=cfg.site)
    cfg_name = str(cfg.path) if cfg.path else None
    split = lambda rid: split_of(rid, seed=cfg.split.seed, val_fraction=cfg.split.val_fraction)  # noqa: E731
    prepared: dict[str, PreparedImaging | PreparedTable] = {}
    label_values: dict[str, dict[str, float]] = {}

    prep: PreparedImaging | PreparedTable
    for key, m in cfg.modalities.items():
        own = cfg.labels_of(key)
        if isinstance(m, DicomModality):
            prep, values = _open_dicom(m, own, cfg_name, seed=cfg.split.seed)
            label_values.update(values)
            report.add_modality(key, kind="dicom", found=prep.found, loaded=len(prep.items), shape=prep.shape,
                                rejected=prep.rejected, duplicates=prep.duplicates, modality=m.modality)
        else:
            assert isinstance(m, TableModality)
            prep = prepare_table(m.spec(own, cfg_name), is_train=lambda rid: split(rid) == "train")
            label_values.update(prep.labels)
            report.add_modality(key, kind="table", found=prep.found, loaded=len(prep.features), shape=(prep.dim,),
                                rejected=prep.rejected, duplicates=prep.duplicates, features=prep.dim)
        prepared[key] = prep

    # one sample per patient present in every key of this site (and with every label it owns)
    sets = [set(p.row_ids) for p in prepared.values()] + [set(v) for v in label_values.values()]
    common = set.intersection(*sets) if sets else set()
    for key, p in prepared.items():
        left = len(set(p.row_ids) - common)
        if left:
            report.modalities[key]["incomplete"] = left
            report.notes.append(f"{left} loaded patients of {key!r} are missing from another key or label "
                                f"of this site and are left out")
    splits = {rid: split(rid) for rid in common}
    report.splits = {"samples": len(common), "train": sum(s == "train" for s in splits.values()),
                     "val": sum(s == "val" for s in splits.values())}
    for name, spec in cfg.labels.items():
        held = [label_values[name][r] for r in sorted(common)]
        (report.describe_label if spec.kind == "regression" else report.count_labels)(name, held)
    if not common and all(len(p.row_ids) for p in prepared.values()):
        report.notes.append("no patient is loaded in every key of this site: check that the IDs match across files")
    data = SiteFiles(site=cfg.site, prepared=prepared, labels=dict(cfg.labels), label_values=label_values,
                    splits=splits, shapes={k: tuple(p.shape) if isinstance(p, PreparedImaging) else (p.dim,)
                                           for k, p in prepared.items()},
                    counts={"found": report.found, "loaded": report.loaded, "rejected": len(report.rejected)},
                    source=cfg_name, kinds={k: "table" if m.kind == "table" else f"dicom {m.modality}"
                                            for k, m in cfg.modalities.items()})
    return data, report


def _open_dicom(m: DicomModality, labels: tuple[LabelSpec, ...], cfg_name: str | None, *, seed: int
                ) -> tuple[PreparedImaging, dict[str, dict[str, float]]]:
    if m.source.is_dir():
        records, rejected = discover_studies(m.source, modality=m.modality)
    else:
        records, rejected = read_manifest(m.source, label_columns=[ls.name for ls in labels],
                                          config=cfg_name, key=f"modalities.{m.key}.source")
    found = len(records) + len(rejected)
    values: dict[str, dict[str, float]] = {ls.name: {} for ls in labels}
    if labels:
        usable: list[ImageRecord] = []
        parsed = {ls.name: parse_label_values(pd.Series([r.labels.get(ls.name) for r in records], dtype=object),
                                              ls, str(m.source)) for ls in labels}
        for i, r in enumerate(records):
            missing = [n for n, v in parsed.items() if pd.isna(v.iat[i])]
            if missing:
                rejected.append({"path": r.where, "reason": "missing_label",
                                 "detail": f"no value for {missing[0]!r}" + (f" ({r.origin})" if r.origin else "")})
            else:
                usable.append(r)
                for n, v in parsed.items():
                    values[n].setdefault(r.patient_id, float(v.iat[i]))
        records = usable
    prep = prepare_imaging(records, key=m.key, modality=m.modality, spatial_size=m.spatial_size,
                           cache_dir=m.cache_dir, pipeline=m.pipeline, seed=seed, duplicates=m.duplicates, found=found)
    prep.rejected = rejected + prep.rejected
    values = {n: {rid: v for rid, v in vals.items() if rid in prep.items} for n, vals in values.items()}
    return prep, values
