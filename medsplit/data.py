"""What a party's data looks like to the engine: row-aligned tables that yield batches of tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from .errors import DataError

__all__ = ["BatchSource", "TensorTable", "SiteData", "LocalSite", "SiteHolding", "LabelHeld", "Declared",
           "batch_order"]


@runtime_checkable
class BatchSource(Protocol):
    """Rows of one party's data.

    ``batch(indices, seed)`` returns {key: tensor with len(indices) rows}; a ``seed`` (the training step) fixes
    any random augmentation of those rows, so that the same step draws the same batch in every run, resumed or
    not. ``row_ids(indices)`` returns the rows' patient IDs, which never leave the site (they are hashed with a
    key the server does not hold).
    """

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int], seed: int | None = None) -> dict[str, torch.Tensor]: ...

    def row_ids(self, indices: Sequence[int]) -> list[str]: ...


class TensorTable:
    """An in-memory BatchSource: equal-length tensors by key (data keys and label keys), and row IDs."""

    def __init__(self, tensors: dict[str, torch.Tensor], ids: Sequence[str] | None = None) -> None:
        lengths = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"TensorTable columns have different lengths: {lengths}")
        self.tensors = tensors
        self._len = next(iter(lengths.values()), 0)
        self.ids = list(ids) if ids is not None else [str(i) for i in range(self._len)]
        if len(self.ids) != self._len:
            raise DataError(f"TensorTable has {self._len} rows but {len(self.ids)} ids")

    def __len__(self) -> int:
        return self._len

    def batch(self, indices: Sequence[int], seed: int | None = None) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}

    def row_ids(self, indices: Sequence[int]) -> list[str]:
        return [self.ids[i] for i in indices]


@dataclass
class SiteData:
    """A site's training and validation rows. Vertical sites hold the same patients in the same row order."""

    train: BatchSource
    val: BatchSource


@dataclass(frozen=True)
class LabelHeld:
    """What a site's label is, as far as the site knows: its kind (binary, multiclass, regression) and classes
    from its YAML, or only the dtype of its tensors (in-memory data)."""

    kind: str | None = None
    classes: int | None = None
    dtype: torch.dtype | None = None


@dataclass(frozen=True)
class SiteHolding:
    """What a site holds, to check it against what the topology declares: the per-sample shape of each data key,
    its labels, what each key is (``table``, ``dicom CT`` ...) where known, and the file that describes it."""

    data: Mapping[str, tuple[int, ...]]
    labels: Mapping[str, LabelHeld] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def of_batch(cls, batch: Mapping[str, torch.Tensor], labels: Sequence[str]) -> SiteHolding:
        """From one batch of in-memory data: shapes of every key, and the dtype of each label key it has."""
        return cls({k: tuple(v.shape[1:]) for k, v in batch.items()},
                   {k: LabelHeld(dtype=batch[k].dtype) for k in labels if k in batch})


@dataclass(frozen=True)
class Declared:
    """Where the topology's declarations come from: ``source`` in words (``experiment 'x'``), the ``file`` to
    edit, and each site party's (name, index) in its ``sites:`` list."""

    source: str = "the topology"
    file: str | None = None
    sites: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def name(self, party: str) -> str:
        return self.sites.get(party, (party, -1))[0]

    def key(self, party: str, rest: str) -> str | None:
        """``sites[1].modalities.ehr.shape`` for ``rest='modalities.ehr.shape'``, when the site is listed."""
        if party not in self.sites:
            return None
        return f"sites[{self.sites[party][1]}].{rest}"

    def fix(self, party: str, rest: str, change: str, python: str) -> str:
        """The fix in the experiment file ("set sites[1].modalities.ehr.shape in FILE to [22]"), or in code."""
        key = self.key(party, rest)
        if key is None:
            return python
        return change.replace("{key}", key + (f" in {self.file}" if self.file else ""))


class LocalSite(Protocol):
    """A site's own data as its node opens it: what it holds, its patients, and its rows for the engine.

    ``row_ids`` are every usable patient (the input to private set intersection); ``counts`` is what the
    server may print about the data (found, loaded, rejected); ``holding()`` what it holds, to check against the
    topology; ``open(keys, order)`` returns the rows with the data and label ``keys`` the topology gives this
    site, restricted to and in the agreed ``order`` when one is given; with ``every_row`` both splits hold every
    row, without augmentation (predictions).
    """

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...]]: ...

    @property
    def counts(self) -> Mapping[str, int]: ...

    @property
    def row_ids(self) -> list[str]: ...

    def holding(self) -> SiteHolding: ...

    def open(self, keys: Sequence[str], order: Sequence[str] | None = None, *, every_row: bool = False
             ) -> SiteData: ...


def batch_order(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Row indices of each batch. Depends only on (n, seed, epoch), so aligned sites batch alike."""
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen).tolist()
    else:
        perm = list(range(n))
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]

