"""EHR tables (CSV or Parquet) to standardized float32 features, statistics fit on the site's training rows only."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medsplit.errors import ConfigError, DataError
from medsplit.suggest import did_you_mean, listing

from .labels import LabelSpec, label_tensor, parse_label_values, positions, to_numbers

__all__ = ["MissingRules", "TableSpec", "PreparedTable", "TableDataset", "prepare_table", "read_table",
           "NUMERIC_RULES", "CATEGORICAL_RULES"]

NUMERIC_RULES = ("mean", "median", "constant", "drop")
CATEGORICAL_RULES = ("most_frequent", "constant")
UNSEEN = "__unseen__"  # one extra one-hot slot per categorical column for categories not seen in training


@dataclass(frozen=True)
class MissingRules:
    """How empty cells are filled; ``columns`` overrides the rule for single columns."""

    numeric: str = "median"
    categorical: str = "most_frequent"
    constant: float = 0.0  # the fill value of the numeric 'constant' rule
    category: str = "unknown"  # the fill value of the categorical 'constant' rule
    columns: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    """What a site declares about one table. ``categorical`` maps a column to its vocabulary, or to
    ``None`` to learn it from the training rows (declare it when sites must agree on the feature size)."""

    path: Path
    id_column: str
    numeric: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    labels: tuple[LabelSpec, ...] = ()
    missing: MissingRules = field(default_factory=MissingRules)
    duplicates: str = "first"  # first | error
    key: str = "ehr"
    config: str | None = None  # the YAML that declared it, for error messages


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV (also .tsv, .csv.gz) or Parquet file as a DataFrame; text columns stay text."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise ConfigError(f"table {path} does not exist",
                          hint="fix the source path; relative paths are relative to the site YAML's folder")
    if path.stat().st_size == 0:
        raise DataError(f"table {path} is empty (0 bytes)", hint="re-export the table with a header line and rows")
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
            # everything as text first: IDs keep leading zeros; numeric columns are parsed and checked below
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                             na_values=["", "NA", "NaN", "nan", "NULL"])
    except pd.errors.EmptyDataError:
        raise DataError(f"table {path} is empty", hint="re-export the table with a header line and rows") from None
    except ImportError as e:
        raise ConfigError(f"reading {path} needs a Parquet engine ({e})", hint="pip install pyarrow") from None
    except Exception as e:  # noqa: BLE001 - parser errors name the line themselves
        raise DataError(f"table {path} cannot be read: {' '.join(str(e).split())[:200]}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DataError(f"table {path} has a header but no rows")
    return df


@dataclass
class PreparedTable:
    """A table after checks, imputation and encoding. Statistics stay here: they never leave the site."""

    key: str
    feature_names: list[str]
    features: dict[str, np.ndarray]  # row_id -> (F,) float32
    labels: dict[str, dict[str, float]]  # label -> row_id -> value
    found: int
    rejected: list[dict[str, str]]
    duplicates: int
    stats: dict[str, Any]

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    @property
    def row_ids(self) -> list[str]:
        return sorted(self.features)

    def dataset(self, row_ids: Sequence[str] | None = None, *, labels: Sequence[LabelSpec] = ()) -> TableDataset:
        ids = list(self.row_ids if row_ids is None else row_ids)
        return TableDataset(self.key, ids, self.features, {s.name: (self.labels[s.name], s.kind) for s in labels})


class TableDataset(torch.utils.data.Dataset):
    """Yields ``{key: float32 (F,), <label>: tensor, "row_id": str}``."""

    def __init__(self, key: str, row_ids: list[str], features: Mapping[str, np.ndarray],
                 labels: Mapping[str, tuple[Mapping[str, float], str]]) -> None:
        self.key, self.row_ids, self._features, self._labels = key, row_ids, features, labels

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rid = self.row_ids[index]
        out: dict[str, Any] = {self.key: torch.from_numpy(self._features[rid])}
        for name, (values, kind) in self._labels.items():
            out[name] = label_tensor(values[rid], kind)
        out["row_id"] = rid
        return out


def prepare_table(spec: TableSpec, is_train: Callable[[str], bool] = lambda _id: True) -> PreparedTable:
    """Read, check, impute and encode ``spec``'s table; fit every statistic on rows where ``is_train(id)``."""
    df = read_table(spec.path)
    fname = spec.path.name
    csv_like = not fname.lower().endswith((".parquet", ".pq"))
    unit, offset = ("line", 2) if csv_like else ("row", 1)
    _check_columns(spec, df)
    rejected: list[dict[str, str]] = []

    def reject(mask: pd.Series, reason: str, detail: str) -> None:
        for i in np.flatnonzero(mask.to_numpy()):
            rejected.append({"path": f"{fname} {unit} {int(i) + offset}", "reason": reason, "detail": detail})

    ids = _ids(df[spec.id_column])
    keep = ids.notna()
    reject(~keep, "missing_id", f"empty {spec.id_column}")
    dup = keep & ids.duplicated(keep="first")
    n_dup = int(dup.sum())
    if n_dup and spec.duplicates == "error":
        raise DataError(f"{n_dup} rows of {spec.path} repeat a {spec.id_column} already seen "
                        f"({positions(dup, unit, offset)})",
                        hint="deduplicate the export, or set duplicates: first in the site YAML to keep the first row")
    reject(dup, "duplicate", f"repeats an earlier {spec.id_column} (rule: keep first)")
    keep &= ~dup

    numeric: dict[str, pd.Series] = {}
    for col in spec.numeric:
        num, present = to_numbers(df[col])
        bad = present & num.isna()
        if bad.any():
            raise DataError(f"numeric column {col!r} in {spec.path} holds {int(bad.sum())} values that are not numbers "
                            f"({positions(bad, unit, offset)})",
                            hint="clean the export, or declare the column under categorical")
        if np.isinf(num).any():
            raise DataError(f"numeric column {col!r} in {spec.path} holds infinite values "
                            f"({positions(pd.Series(np.isinf(num)), unit, offset)})")
        if not present.any():
            raise DataError(f"numeric column {col!r} in {spec.path} is empty in every row",
                            hint="fix the export, or remove the column from numeric")
        numeric[col] = num

    labels: dict[str, pd.Series] = {}
    for ls in spec.labels:
        values = parse_label_values(df[ls.name], ls, str(spec.path), unit=unit, offset=offset)
        miss = keep & values.isna()
        reject(miss, "missing_label", f"no value for label {ls.name!r}")
        keep &= ~miss
        labels[ls.name] = values

    rules = {c: spec.missing.columns.get(c, spec.missing.numeric) for c in spec.numeric}
    for col, rule in rules.items():
        if rule == "drop":
            miss = keep & numeric[col].isna()
            reject(miss, "missing_value", f"empty {col!r} (rule: drop)")
            keep &= ~miss

    train = keep & ids.map(lambda i: bool(is_train(i)) if isinstance(i, str) else False).astype(bool)
    if not train.any():
        raise DataError(f"{spec.path} has no usable training rows ({int(keep.sum())} usable rows, all in validation)",
                        hint="check the ID column and the split's val_fraction")
    stats: dict[str, Any] = {"numeric": {}, "categorical": {}}
    columns: list[np.ndarray] = []
    names: list[str] = []
    for col in spec.numeric:
        x = numeric[col]
        observed = x[train].dropna()
        if observed.empty:
            raise DataError(f"numeric column {col!r} in {spec.path} has no values in the {int(train.sum())} "
                            "training rows",
                            hint="fix the export, or remove the column from numeric")
        fill = {"mean": observed.mean(), "median": observed.median()}.get(rules[col], spec.missing.constant)
        mean, std = float(observed.mean()), float(observed.std(ddof=0))
        std = std if std > 1e-12 else 1.0  # a constant column carries no signal; keep it at 0, not NaN
        columns.append(((x.fillna(fill) - mean) / std).to_numpy(np.float32))
        names.append(col)
        stats["numeric"][col] = {"fill": float(fill), "mean": mean, "std": std}

    for col, declared in spec.categorical.items():
        text = df[col].astype("string").str.strip()
        text = text.where(text.notna() & (text != ""))
        rule = spec.missing.columns.get(col, spec.missing.categorical)
        observed = text[train].dropna()
        if observed.empty and rule == "most_frequent":
            raise DataError(f"categorical column {col!r} in {spec.path} has no values in the training rows",
                            hint="fix the export, or use the 'constant' missing rule for it")
        # most frequent, ties broken alphabetically so that every run encodes the same way
        fill = (sorted(observed.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                if rule == "most_frequent" else spec.missing.category)
        filled = text.fillna(fill)
        vocab = list(declared) if declared is not None else sorted(set(filled[train]))
        for v in vocab:
            columns.append((filled == v).to_numpy(np.float32))
            names.append(f"{col}={v}")
        columns.append((~filled.isin(vocab)).to_numpy(np.float32))
        names.append(f"{col}={UNSEEN}")
        stats["categorical"][col] = {"fill": fill, "vocabulary": vocab}

    matrix = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(df), 0), np.float32)
    rows = np.flatnonzero(keep.to_numpy())
    features = {ids.iat[i]: matrix[i] for i in rows}
    label_values = {name: {ids.iat[i]: float(v.iat[i]) for i in rows} for name, v in labels.items()}
    return PreparedTable(key=spec.key, feature_names=names, features=features, labels=label_values,
                         found=len(df), rejected=rejected, duplicates=n_dup, stats=stats)


def _ids(col: pd.Series) -> pd.Series:
    def norm(v: Any) -> str | None:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, float) and v.is_integer():  # Parquet integer IDs with gaps arrive as floats
            return str(int(v))
        return str(v).strip() or None

    return col.map(norm).astype(object)


def _check_columns(spec: TableSpec, df: pd.DataFrame) -> None:
    where = f" (declared in {spec.config}, key modalities.{spec.key})" if spec.config else ""
    wanted = [(spec.id_column, "id_column"), *((c, "numeric") for c in spec.numeric),
              *((c, "categorical") for c in spec.categorical), *((ls.name, "labels") for ls in spec.labels)]
    for col, what in wanted:
        if col not in df.columns:
            raise ConfigError(f"column {col!r} ({what}) is missing from "
                              f"{spec.path}{did_you_mean(col, df.columns)}{where}",
                              hint=f"the table's columns are: {listing(df.columns)}")
