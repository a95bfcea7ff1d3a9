"""An imaging modality of a site: records decoded once, preprocessed, cached on local disk, served as dict samples."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import PersistentDataset
from monai.transforms import Compose

from medsplit.errors import DataError

from .dicom import SiteDicomReader, classify_exception
from .labels import label_tensor
from .manifest import ImageRecord
from .transforms import PipelineConfig, augment_transforms, default_pipeline, preprocess_transforms

__all__ = ["ImagingDataset", "PreparedImaging", "prepare_imaging"]

# Bump when preprocessing code changes in a way that invalidates cached tensors.
_CACHE_VERSION = 1


@dataclass
class PreparedImaging:
    """A modality key after every record was decoded and cached once; ``dataset()`` serves any subset."""

    key: str
    shape: tuple[int, ...]
    cache_dir: Path
    items: dict[str, dict[str, Any]]  # row_id -> the hashed PersistentDataset item
    records: dict[str, ImageRecord]
    preprocess: list[Any]
    pipeline: PipelineConfig
    seed: int
    found: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0

    @property
    def reader(self) -> SiteDicomReader:
        return self.preprocess[0].site_reader

    @property
    def row_ids(self) -> list[str]:
        return sorted(self.items)

    def dataset(self, row_ids: Sequence[str] | None = None, *, train: bool = False,
                labels: Mapping[str, Mapping[str, Any]] | None = None,
                label_kinds: Mapping[str, str] | None = None) -> ImagingDataset:
        """Samples for ``row_ids`` in that order (all loaded rows, sorted, by default); augmented if ``train``."""
        ids = list(self.row_ids if row_ids is None else row_ids)
        unknown = [i for i, r in enumerate(ids) if r not in self.items]
        if unknown:
            raise DataError(f"{len(unknown)} requested rows are not loaded for key {self.key!r} "
                            f"(first at position {unknown[0]})")
        # the deterministic steps are shared (one reader, one cache); random ones are per dataset
        chain = list(self.preprocess) + (augment_transforms(self.key, self.shape[1:], self.pipeline.augment)
                                         if train else [])
        transform = Compose(chain)
        transform.set_random_state(seed=self.seed)
        return ImagingDataset(self.key, ids, [self.items[i] for i in ids], transform, self.cache_dir,
                              labels=labels or {}, label_kinds=label_kinds or {}, seed=self.seed)


class ImagingDataset(torch.utils.data.Dataset):
    """Yields ``{key: float32 tensor, <label>: tensor, "row_id": str}``; decoded images come from the disk cache."""

    def __init__(self, key: str, row_ids: list[str], items: list[dict[str, Any]], transform: Compose,
                 cache_dir: Path, *, labels: Mapping[str, Mapping[str, Any]], label_kinds: Mapping[str, str],
                 seed: int = 0) -> None:
        self.key = key
        self.row_ids = row_ids
        self.labels = labels
        self.label_kinds = label_kinds
        self._data = PersistentDataset(items, transform=transform, cache_dir=cache_dir)
        self._seed = seed

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index)

    def sample(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Sample ``index``; with ``seed`` its random augmentation is drawn from that seed alone, so a draw
        does not depend on which samples were drawn before (a resumed run draws what an uninterrupted one
        would have)."""
        rid = self.row_ids[index]
        if seed is not None:
            self._data.transform.set_random_state(seed=_mix(self._seed, seed))
        out: dict[str, Any] = {self.key: self._data[index][self.key]}
        for name, values in self.labels.items():
            out[name] = label_tensor(values[rid], self.label_kinds.get(name, "binary"))
        out["row_id"] = rid
        return out


def _mix(*parts: int) -> int:
    """A 32-bit seed (what MONAI's random state takes) from several integers."""
    digest = hashlib.sha256(b"medsplit-augment|" + "|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def prepare_imaging(records: Sequence[ImageRecord], *, key: str, modality: str, spatial_size: Sequence[int],
                    cache_dir: str | os.PathLike, pipeline: PipelineConfig | None = None, seed: int = 0,
                    duplicates: str = "first", found: int | None = None) -> PreparedImaging:
    """Decode, preprocess and cache every record once; set aside the ones that fail, with their reason.

    ``row_id`` is the patient ID. With ``duplicates="first"`` a patient's later records are set
    aside; with ``"error"`` any duplicate raises a ``DataError`` (counting them, naming no patient).
    """
    p = pipeline or default_pipeline(modality)
    size = tuple(int(s) for s in spatial_size)
    pre = preprocess_transforms(key, modality, size, p, load=True)
    cache = Path(cache_dir) / _pipeline_digest(modality, size, p)
    cache.mkdir(parents=True, exist_ok=True)
    prepared = PreparedImaging(key=key, shape=(1, *size), cache_dir=cache, items={}, records={}, preprocess=pre,
                               pipeline=p, seed=seed, found=len(records) if found is None else found)

    seen: set[str] = set()
    unique: list[ImageRecord] = []
    for r in records:
        if r.patient_id in seen:
            prepared.duplicates += 1
            prepared.rejected.append({"path": r.where or r.paths[0], "reason": "duplicate",
                                      "detail": "another record of this patient comes first" + _at(r)})
            continue
        seen.add(r.patient_id)
        unique.append(r)
    if duplicates == "error" and prepared.duplicates:
        raise DataError(f"key {key!r}: {prepared.duplicates} records repeat a patient already listed",
                        hint="keep one image per patient, or set duplicates: first in the site YAML")

    items = [{key: r.source, "_sig": _signature(r.paths), "_v": _CACHE_VERSION} for r in unique]
    checker = PersistentDataset(items, transform=Compose(pre), cache_dir=cache)
    for i, r in enumerate(unique):
        try:
            checker[i]  # decodes once and writes the cache, or finds it there
        except Exception as e:  # noqa: BLE001 - a bad record is set aside, never fatal
            rej = classify_exception(e, r.where)
            prepared.rejected.append({"path": r.where or r.paths[0], "reason": rej.reason,
                                      "detail": rej.detail + _at(r) + (f"; fix: {rej.hint}" if rej.hint else "")})
            continue
        prepared.items[r.patient_id] = items[i]
        prepared.records[r.patient_id] = r
    return prepared


def _at(r: ImageRecord) -> str:
    return f" ({r.origin})" if r.origin else ""


def _signature(paths: Sequence[str]) -> str:
    """Size and mtime of every file, so that a changed file is decoded again instead of served stale."""
    h = hashlib.sha256()
    for p in paths:
        files = sorted(Path(p).iterdir()) if os.path.isdir(p) else [Path(p)]
        for f in files:
            try:
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
            except OSError:
                h.update(f"{f.name}:missing;".encode())
    return h.hexdigest()[:16]


def _pipeline_digest(modality: str, size: tuple[int, ...], p: PipelineConfig) -> str:
    # Augmentations are not cached, so they do not change the folder: train and eval share it.
    spec = {k: v for k, v in asdict(p).items() if k != "augment"}
    blob = json.dumps({"modality": modality, "size": size, "pipeline": spec, "v": _CACHE_VERSION}, sort_keys=True)
    return f"{modality.lower()}-{'x'.join(map(str, size))}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

