"""Sites' data reports as counts only: redacted first, then reduced to numbers (no paths, no IDs, no rows)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data_adapters.report import DataReport

__all__ = ["report_counts", "load_reports", "REPORTS_DIR"]

REPORTS_DIR = "reports"  # <run dir>/reports/<site>.json, as `medsplit data check --json` writes them
_FIELDS = ("site", "found", "loaded", "rejected", "shapes", "label_balance", "duplicates", "splits", "modalities")


def report_counts(report: DataReport | Mapping[str, Any]) -> dict[str, Any]:
    """Counts from a site's report (a DataReport or its ``to_dict()``), after ``DataReport.redacted()``."""
    full = report if isinstance(report, DataReport) else DataReport(**{k: report[k] for k in _FIELDS if k in report})
    safe = full.redacted()
    return {"site": safe.site, "found": int(safe.found), "loaded": int(safe.loaded), "rejected": len(safe.rejected),
            "rejected by reason": safe.reasons(), "split": dict(safe.splits),
            "label balance": {k: dict(v) for k, v in safe.label_balance.items()},
            "shapes": {k: list(v) for k, v in safe.shapes.items()},
            "modalities": {k: {n: v[n] for n in ("kind", "found", "loaded", "rejected", "duplicates") if n in v}
                           for k, v in safe.modalities.items()}}


def load_reports(run_dir: str | Path, info: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Counts for every site report of a run: ``data_reports`` in the run store, or files under reports/."""
    raw: list[Mapping[str, Any]] = []
    stored = (info or {}).get("data_reports")
    if isinstance(stored, Mapping):
        raw += [dict(r, site=r.get("site") or site) for site, r in stored.items() if isinstance(r, Mapping)]
    folder = Path(run_dir) / REPORTS_DIR
    if not raw and folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, Mapping):
                raw.append(dict(data, site=data.get("site") or path.stem))
    return [report_counts(r) for r in raw]
