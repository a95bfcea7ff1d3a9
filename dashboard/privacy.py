"""The privacy view's data: each cut's latest dCor, a run's report card (written by `medsplit privacy`), points
for a privacy-against-AUC chart across runs, and small counts suppressed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard import runs

__all__ = ["CARD", "SMALL", "load_card", "figures", "latest_dcor", "cut_table", "label_table", "privacy_points",
           "count"]

CARD = Path("privacy") / "card.json"  # RUN_DIR/privacy/card.json (sites.privacy.CARD_DIR)
SMALL = 10  # a count below this could single out a patient: shown as "<10", never as the number


def count(n: Any) -> str:
    """A count as the page may show it: "<10" for 1 to 9 (small cells are suppressed), else the number."""
    n = int(n)
    return f"<{SMALL}" if 0 < n < SMALL else str(n)


def load_card(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's report card, or None when `medsplit privacy` wrote none there (or it cannot be read)."""
    path = Path(run_dir) / CARD
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and isinstance(card.get("privacy"), dict) else None


def figures(run_dir: str | Path, card: dict[str, Any]) -> dict[str, Path]:
    """The card's figures that exist in its own folder: {title: path} (names only; nothing outside the folder)."""
    folder = (Path(run_dir) / CARD).parent
    out = {}
    for title, name in (card.get("figures") or {}).items():
        path = folder / Path(str(name)).name
        if path.suffix == ".png" and path.is_file():
            out[str(title)] = path
    return out


def latest_dcor(privacy: pd.DataFrame) -> pd.DataFrame:
    """Per cut, its distance correlation at the last epoch the run store holds."""
    wide = runs.dcor(privacy)
    if len(wide.columns) <= 1:
        return pd.DataFrame(columns=["cut", "epoch", "dCor"])
    last = wide.iloc[-1]
    return pd.DataFrame({"cut": [c for c in wide.columns if c != "epoch"], "epoch": int(last["epoch"]),
                         "dCor": [round(float(last[c]), 3) for c in wide.columns if c != "epoch"]})


def _r(v: Any) -> Any:
    return None if v is None else round(float(v), 3)


def cut_table(card: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for cut, c in sorted(card["privacy"].get("cuts", {}).items()):
        r = c.get("reconstruction") or {}
        rows.append({"cut": cut, "from": c.get("site"), "to": ", ".join(c.get("to") or []), "dCor": _r(c.get("dcor")),
                     "SSIM": _r(r.get("ssim")), "SSIM of the mean image": _r((r.get("baseline") or {}).get("ssim")),
                     "table R²": _r(r.get("r2")), "PSNR (dB)": _r(r.get("psnr"))})
    return pd.DataFrame(rows)


def label_table(card: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for task, t in sorted(card["privacy"].get("labels", {}).items()):
        if t.get("shared"):
            rows.append({"task": task, "labels": "sent in the clear to " + ", ".join(t.get("sent_to") or []),
                         "attacker": "–", "norm leak AUC": None, "direction leak AUC": None, "patients": "–",
                         "positives": "–"})
        for who, a in sorted((t.get("attackers") or {}).items()):
            rows.append({"task": task, "labels": "stay at their site", "attacker": who,
                         "norm leak AUC": _r(a.get("norm_leak_auc")),
                         "direction leak AUC": _r(a.get("direction_leak_auc")),
                         "patients": count(a.get("patients", 0)), "positives": count(a.get("positives", 0))})
    return pd.DataFrame(rows)


def privacy_points(loaded: list[runs.RunData]) -> pd.DataFrame:
    """One row per run: its last val AUC (first task) and its leakage: max dCor, and from its card, if any, the
    worst image SSIM and the worst label leak AUC."""
    rows = []
    for run in loaded:
        row: dict[str, Any] = {"run": run.name}
        m = run.metrics
        auc = m[(m["split"] == "val") & (m["name"].isin(["auc", "macro_auc"]))] if not m.empty else m
        if auc.empty:
            continue
        last = auc[auc["epoch"] == auc["epoch"].max()].sort_values(["task", "ts"])
        row["val AUC"] = round(float(last.groupby("task")["value"].last().iloc[0]), 4)
        d = latest_dcor(run.privacy)
        row["max dCor"] = float(d["dCor"].max()) if not d.empty else None
        card = load_card(run.path)
        if card is not None:
            ssims = [c["reconstruction"]["ssim"] for c in card["privacy"]["cuts"].values()
                     if c.get("reconstruction", {}).get("ssim") is not None]
            leaks = [v for t in card["privacy"]["labels"].values()
                     for v in (t.get("norm_leak_auc"), t.get("direction_leak_auc")) if v is not None]
            row["worst SSIM"] = round(max(ssims), 3) if ssims else None
            row["worst leak AUC"] = round(max(leaks), 3) if leaks else None
        rows.append(row)
    return pd.DataFrame(rows)
