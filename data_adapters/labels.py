"""Labels a site owns: their kind, how text values map to classes, and the check that every value is usable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from medsplit.errors import DataError

__all__ = ["LabelSpec", "LABEL_KINDS", "label_tensor", "parse_label_values", "to_numbers", "positions", "as_text"]

LABEL_KINDS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class LabelSpec:
    """A label column and what its values mean.

    ``binary``: 0/1, or text mapped by ``values`` ([negative, positive]) or ``positive`` (the positive value; the
    column may hold one other value, the negative). ``multiclass``: 0..classes-1, or text mapped by ``values``
    (the first is class 0). ``regression``: numbers. Binary and regression labels are served as float32,
    multiclass labels as int64.
    """

    name: str
    kind: str = "binary"
    classes: int = 2
    source: str | None = None  # the modality key whose file holds this column
    values: tuple[str, ...] | None = None
    positive: str | None = None

    def mapping(self) -> str:
        """How the site YAML states this label's values, for messages."""
        if self.values is not None:
            return f"values: [{', '.join(self.values)}]"
        if self.positive is not None:
            return f"positive: {self.positive}"
        return ""


def label_tensor(value: Any, kind: str) -> torch.Tensor:
    """Multiclass labels as int64 class indices; binary and regression labels as float32; scalars."""
    if kind == "multiclass":
        return torch.tensor(int(value), dtype=torch.int64)
    return torch.tensor(float(value), dtype=torch.float32)


def parse_label_values(values: pd.Series, spec: LabelSpec, where: str, *, unit: str = "line",
                       offset: int = 2) -> pd.Series:
    """Label values as numbers (class indices, 0/1, or regression targets) with NaN where the cell is empty.

    A value the label's kind or mapping does not allow raises a ``DataError`` that names the file, the column
    and the lines, never an ID or a value (a misnamed column could hold identifiers).
    """
    if spec.values is not None or spec.positive is not None:
        return _mapped(values, spec, where, unit, offset)
    num, present = to_numbers(values)
    bad = present & (num.isna() | np.isinf(num))
    if spec.kind == "binary":
        bad |= num.notna() & ~num.isin([0.0, 1.0])
        expected, fix = "0 or 1", "map the column's values in the site YAML (labels.{n}: {{positive: <value>}} or " \
                                  "{{values: [<negative>, <positive>]}}), or recode it to 0/1"
    elif spec.kind == "multiclass":
        ok = (num == np.floor(num)) & (num >= 0) & (num < spec.classes)
        bad |= num.notna() & ~ok
        expected = f"an integer class from 0 to {spec.classes - 1}"
        fix = "list the column's values in the site YAML (labels.{n}: {{values: [...]}}, the first is class 0), " \
              "or recode it to 0.." + str(spec.classes - 1)
    else:
        expected, fix = "a finite number", "clean the column, or leave the cell empty if unknown"
    if bad.any():
        raise DataError(f"label column {spec.name!r} in {where} has {int(bad.sum())} values that are not {expected} "
                        f"({positions(bad, unit, offset)})",
                        hint=fix.format(n=spec.name) + "; an empty cell leaves the row out")
    return num


def _mapped(values: pd.Series, spec: LabelSpec, where: str, unit: str, offset: int) -> pd.Series:
    """Text values through the label's mapping: ``values`` (their positions) or ``positive`` (1, the other 0)."""
    text = as_text(values)
    present = text.notna()
    if spec.values is not None:
        index = {v: float(i) for i, v in enumerate(spec.values)}
        num = text.map(index).astype("float64")
        bad = present & num.isna()
        if bad.any():
            kinds = text[bad].nunique()
            raise DataError(f"label column {spec.name!r} in {where} has {int(bad.sum())} values outside "
                            f"{spec.mapping()} ({kinds} different; {positions(bad, unit, offset)})",
                            hint=f"add them to labels.{spec.name}.values in the site YAML if they are classes "
                                 "(sites must agree on the list), or correct those cells; an empty cell leaves the "
                                 "row out. Values are compared exactly, case and spaces inside included")
        return num
    other = present & (text != spec.positive)
    first = other & ~text.where(other).duplicated()  # the first cell of each value that is not the positive one
    if int(first.sum()) > 1:
        raise DataError(f"label column {spec.name!r} in {where} holds {int(first.sum())} different values besides "
                        f"the positive one ({spec.mapping()}), so the negative class is ambiguous (each first "
                        f"seen on {positions(first, unit, offset)})",
                        hint=f"list both classes in the site YAML, labels.{spec.name}: {{values: [<negative>, "
                             f"{spec.positive}]}}, and correct or empty the cells that hold neither; values are "
                             "compared exactly, case included")
    return (text == spec.positive).astype("float64").where(present)


def as_text(values: pd.Series) -> pd.Series:
    """Cell values as stripped text, None where empty; whole numbers from typed columns (Parquet) without '.0'."""
    def one(v: Any) -> str | None:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, (bool, np.bool_)):
            return str(v).lower()
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip() or None

    return values.map(one).astype(object)


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
