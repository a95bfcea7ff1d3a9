"""The per-site data report: what was found, loaded and set aside, as counts that are safe to show."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from medsplit.errors import ConfigError, DataError

__all__ = ["REJECT_REASONS", "DataReport", "Rejected"]

# Every reason a record can be set aside for. A closed set, so that dashboards and tests can
# rely on it and a crash inside a reader can never pass for a data problem ("internal_error").
REJECT_REASONS: dict[str, str] = {
    "missing": "the path in the manifest does not exist",
    "not_dicom": "not a DICOM file",
    "corrupt": "DICOM that cannot be parsed or decoded (truncated or malformed)",
    "no_pixel_data": "an image object without pixel data",
    "not_an_image": "a DICOM object that is not an image (RT plan/structure/dose, SR, SEG, waveform, DICOMDIR, ...)",
    "codec_missing": "compressed with a transfer syntax that no installed decoder handles",
    "non_finite": "pixel values or rescale tags are NaN or infinite",
    "wrong_modality": "the file's Modality tag differs from the modality configured for this key",
    "unsupported": "a valid image the pipeline cannot shape into the model input",
    "duplicate": "a second record for a patient already loaded (rule: keep first)",
    "missing_id": "a table row without a patient ID",
    "missing_value": "a table row with a missing value where the rule is 'drop'",
    "missing_label": "a row without a value for a label this site owns",
    "incomplete": "the patient is missing from another modality of this site",
    "internal_error": "a bug in the reader, not a data problem: please report it",
}


class Rejected(DataError):
    """One record cannot be used; ``reason`` is a key of ``REJECT_REASONS``, the message says why."""

    def __init__(self, reason: str, detail: str, *, hint: str | None = None) -> None:
        if reason not in REJECT_REASONS:
            raise ConfigError(f"unknown reject reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}", hint=hint)


@dataclass
class DataReport:
    """Counts only. Patient IDs never appear here: the report may be shown outside the site.

    ``rejected`` entries carry the local path (a site admin needs it to fix the file); use
    ``redacted()`` before the report leaves the site, since folder names can hold identifiers.
    """

    site: str | None = None
    found: int = 0
    loaded: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    label_balance: dict[str, dict[str, int]] = field(default_factory=dict)
    label_stats: dict[str, dict[str, float]] = field(default_factory=dict)  # regression labels: n, mean, min, max
    duplicates: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def reject(self, path: str, reason: str, detail: str = "", *, key: str | None = None) -> None:
        entry = {"path": str(path), "reason": reason, "detail": detail or REJECT_REASONS[reason]}
        if key is not None:
            entry["key"] = key
        self.rejected.append(entry)

    def add_modality(self, key: str, *, kind: str, found: int, loaded: int, shape: tuple[int, ...] | None,
                     rejected: list[dict[str, str]], duplicates: int = 0, **extra: Any) -> None:
        """Fold one modality's counts into the report; site totals are sums over modalities."""
        self.modalities[key] = {"kind": kind, "found": found, "loaded": loaded,
                                "rejected": len(rejected), "duplicates": duplicates, **extra}
        self.found += found
        self.loaded += loaded
        for r in rejected:
            self.reject(r["path"], r["reason"], r.get("detail", ""), key=key)
        if shape is not None:
            self.shapes[key] = list(shape)
        if duplicates:
            self.duplicates[key] = duplicates

    def count_labels(self, name: str, values: list[Any]) -> None:
        counts = Counter(str(_as_class(v)) for v in values)
        self.label_balance[name] = dict(sorted(counts.items()))

    def describe_label(self, name: str, values: list[float]) -> None:
        """A regression label: how many values and their range (aggregates, safe to show)."""
        arr = [float(v) for v in values]
        self.label_stats[name] = {"n": len(arr), "mean": sum(arr) / len(arr) if arr else float("nan"),
                                  "min": min(arr, default=float("nan")), "max": max(arr, default=float("nan"))}

    def reasons(self) -> dict[str, int]:
        return dict(Counter(r["reason"] for r in self.rejected).most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "found": self.found,
            "loaded": self.loaded,
            "rejected": [dict(r) for r in self.rejected],
            "rejected_by_reason": self.reasons(),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "label_balance": {k: dict(v) for k, v in self.label_balance.items()},
            "label_stats": {k: dict(v) for k, v in self.label_stats.items()},
            "duplicates": dict(self.duplicates),
            "splits": dict(self.splits),
            "modalities": {k: dict(v) for k, v in self.modalities.items()},
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def redacted(self) -> DataReport:
        """A copy whose rejected entries keep the reason but not the path (for the dashboard)."""
        out = DataReport(**{**self.__dict__, "rejected": [], "notes": list(self.notes)})
        out.rejected = [{"path": f"<record {i + 1}>", "reason": r["reason"], "detail": REJECT_REASONS[r["reason"]],
                         **({"key": r["key"]} if "key" in r else {})} for i, r in enumerate(self.rejected)]
        return out

    def render(self, max_rejected: int = 20) -> str:
        """Human-readable text, as `medsplit data check` prints it."""
        title = f"data report for site {self.site!r}" if self.site else "data report"
        lines = [title, "=" * len(title),
                 f"found {self.found}, loaded {self.loaded}, rejected {len(self.rejected)}"]
        for key, m in self.modalities.items():
            shape = self.shapes.get(key)
            lines.append(f"  {key} ({m['kind']}): found {m['found']}, loaded {m['loaded']}, rejected {m['rejected']}"
                         + (f", sample shape {tuple(shape)}" if shape else "")
                         + (f", duplicate IDs {m['duplicates']}" if m.get("duplicates") else ""))
        if self.splits:
            lines.append("split: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        for name, counts in self.label_balance.items():
            total = sum(counts.values()) or 1
            lines.append(f"label {name}: " + ", ".join(f"{c}: {n} ({100 * n / total:.0f}%)" for c, n in counts.items()))
        for name, st in self.label_stats.items():
            lines.append(f"label {name}: {st['n']} values, mean {st['mean']:.4g}, "
                         f"from {st['min']:.4g} to {st['max']:.4g}")
        if self.rejected:
            lines.append("rejected by reason: " + ", ".join(f"{k} {v}" for k, v in self.reasons().items()))
            for r in self.rejected[:max_rejected]:
                lines.append(f"  - {r['path']}: {r['reason']}: {r['detail']}")
            if len(self.rejected) > max_rejected:
                lines.append(f"  ... and {len(self.rejected) - max_rejected} more (see --json)")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    __str__ = render


def _as_class(v: Any) -> Any:
    # 1.0 and 1 are the same class; keep the text of the report stable across CSV/Parquet dtypes.
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
