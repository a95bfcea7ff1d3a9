"""Labels a site owns: their kind, and the check that their values are usable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from medsplit.errors import DataError

__all__ = ["LabelSpec", "LABEL_KINDS", "label_tensor", "parse_label_values", "to_numbers", "positions"]

LABEL_KINDS = ("binary", "multiclass")


@dataclass(frozen=True)
class LabelSpec:
    """``binary`` values are 0/1 (served as float32); ``multiclass`` values are 0..classes-1 (int64)."""

    name: str
    kind: str = "binary"
    classes: int = 2
    source: str | None = None  # the modality key whose file holds this column


def label_tensor(value: Any, kind: str) -> torch.Tensor:
    """Binary labels as float32 (for BCE losses), multiclass as int64 class indices; scalars."""
    if kind == "multiclass":
        return torch.tensor(int(value), dtype=torch.int64)
    return torch.tensor(float(value), dtype=torch.float32)


def parse_label_values(values: pd.Series, spec: LabelSpec, where: str, *, unit: str = "line",
                       offset: int = 2) -> pd.Series:
    """Numeric label values with NaN where missing; invalid values raise a ``DataError`` naming lines, not IDs."""
    num, present = to_numbers(values)
    bad = present & num.isna()
    if spec.kind == "binary":
        bad |= num.notna() & ~num.isin([0.0, 1.0])
        expected = "0 or 1"
    else:
        ok = (num == np.floor(num)) & (num >= 0) & (num < spec.classes)
        bad |= num.notna() & ~ok
        expected = f"an integer class from 0 to {spec.classes - 1}"
    if bad.any():
        raise DataError(f"label column {spec.name!r} in {where} has {int(bad.sum())} values that are not {expected} "
                        f"({positions(bad, unit, offset)})",
                        hint=f"recode the column to {expected}, or leave the cell empty if unknown")
    return num


def to_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(float64 values with NaN where missing or unparsable, mask of cells that hold something)."""
    if values.dtype.kind in "biuf":
        num = values.astype("float64")
        return num, num.notna()
    text = values.astype("string").str.strip()
    present = text.notna() & (text != "")
    num = pd.to_numeric(text.where(present), errors="coerce").astype("float64")
    return num, present.fillna(False).astype(bool)


def positions(mask: pd.Series, unit: str = "line", offset: int = 2, limit: int = 5) -> str:
    """Where the flagged cells are, as file lines (CSV: data row i is on line i + 2). IDs are never quoted."""
    idx = [int(i) + offset for i in np.flatnonzero(mask.to_numpy())[:limit]]
    more = ", ..." if int(mask.sum()) > limit else ""
    return f"{unit}{'s' if len(idx) > 1 else ''} " + ", ".join(map(str, idx)) + more
