"""What a run reports: each party's aggregates per epoch, the epoch record merged from them, the run summary.

In one process every party's report is merged directly; across processes each party posts its report and
the host merges the same way, so both produce the same record and summary (the ``--json`` contract).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .party import PartyRunner

__all__ = ["EpochRecord", "PartyReport", "party_report", "merge_reports", "merge_train_loss", "merge_eval",
           "summarize", "format_epoch"]

#: one party's aggregates after an epoch (JSON-able): no tensor, no ID, nothing per patient
PartyReport = dict[str, Any]


@dataclass
class EpochRecord:
    """What one epoch produced: mean train loss and validation metrics per task, dCor per leaky cut."""

    epoch: int
    train_loss: dict[str, float]
    metrics: dict[str, dict[str, float]]
    dcor: dict[str, float]
    seconds: float
    steps: int

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, "metrics": self.metrics, "dcor": self.dcor,
                "seconds": round(self.seconds, 3), "steps": self.steps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRecord:
        return cls(int(d["epoch"]), dict(d["train_loss"]), {t: dict(m) for t, m in d["metrics"].items()},
                   dict(d["dcor"]), float(d["seconds"]), int(d["steps"]))


def party_report(runner: PartyRunner) -> PartyReport:
    """A party's aggregates since its last report; its bytes and audit rows are cumulative over the run."""
    metrics, dcor = runner.pop_eval()
    meter = runner.wire.meter
    return {"train_loss": runner.pop_train_loss(), "metrics": metrics, "dcor": dcor,
            "flops": int(runner.flops_per_step or 0), "compute_seconds": float(runner.compute_seconds),
            "bytes": meter.bytes_by_party_kind().get(runner.name, {"sent": {}, "received": {}}),
            "audit": meter.audit(src=runner.name)}


def merge_train_loss(per_party: list[Mapping[str, tuple[float, int]]]) -> dict[str, float]:
    """Row-weighted mean train loss per task over the parties that computed it."""
    sums: dict[str, list[float]] = {}
    for losses in per_party:
        for task, (loss, n) in losses.items():
            s = sums.setdefault(task, [0.0, 0])
            s[0] += loss * n
            s[1] += n
    return {t: s / max(n, 1) for t, (s, n) in sums.items()}


def merge_eval(per_party: list[tuple[Mapping[str, Mapping[str, float]], Mapping[str, float]]]
               ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Validation metrics per task pooled over the parties holding a head (row-weighted), and dCor per cut."""
    metrics: dict[str, dict[str, float]] = {}
    dcor: dict[str, float] = {}
    for m, d in per_party:
        dcor.update(d)
        for task, values in m.items():
            if task not in metrics:
                metrics[task] = dict(values)
                continue
            # A task whose heads sit at several sites (horizontal U-shaped): weight by rows.
            total = metrics[task]["n"] + values["n"]
            for k, v in values.items():
                if k != "n":
                    metrics[task][k] = (metrics[task][k] * metrics[task]["n"] + v * values["n"]) / total
            metrics[task]["n"] = total
    return metrics, dcor


def merge_reports(epoch: int, reports: Mapping[str, PartyReport], train_steps: int, seconds: float) -> EpochRecord:
    """The epoch's record from every party's report."""
    train_loss = merge_train_loss([{t: (float(v[0]), int(v[1])) for t, v in r["train_loss"].items()}
                                   for r in reports.values()])
    metrics, dcor = merge_eval([(r["metrics"], r["dcor"]) for r in reports.values()])
    return EpochRecord(epoch, train_loss, metrics, dcor, seconds, train_steps)


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def summarize(history: list[EpochRecord], reports: Mapping[str, PartyReport], train_steps: int,
              seconds: float) -> dict[str, Any]:
    """The run's numbers (the ``--json`` summary): last metrics, history, bytes, FLOPs and the audit.

    ``reports`` are the parties' last reports; each party's audit lists what it sent, so together they
    list every crossing once.
    """
    last = history[-1] if history else None
    return {
        "metrics": {t: {k: _finite(v) for k, v in m.items()} for t, m in (last.metrics if last else {}).items()},
        "train_loss": {t: _finite(v) for t, v in (last.train_loss if last else {}).items()},
        "dcor": {s: _finite(v) for s, v in (last.dcor if last else {}).items()},
        "history": [r.as_dict() for r in history],
        "bytes": {p: {d: sum(r["bytes"][d].values()) for d in ("sent", "received")}
                  for p, r in sorted(reports.items())},
        "flops_per_step": {p: int(r["flops"]) for p, r in sorted(reports.items())},
        "compute_seconds": {p: round(r["compute_seconds"], 3) for p, r in sorted(reports.items())},
        "audit": sorted((row for r in reports.values() for row in r["audit"]),
                        key=lambda r: (r["src"], r["dst"], r["edge"], r["kind"])),
        "steps": train_steps,
        "seconds": round(seconds, 3),
    }


def format_epoch(rec: EpochRecord, epochs: int) -> str:
    """One line per epoch, as the CLI and the server's log print it."""
    parts = []
    for task, m in sorted(rec.metrics.items()):
        bits = [f"train_loss {rec.train_loss.get(task, float('nan')):.4f}", f"val_loss {m['val_loss']:.4f}"]
        bits += [f"{k} {m[k]:.4f}" for k in ("val_auc", "val_macro_auc", "val_acc", "val_mse", "val_mae", "val_r2")
                 if k in m and m[k] is not None]
        parts.append(f"{task}: " + ", ".join(bits))
    dcor = "".join(f"  dCor[{s}] {v:.3f}" for s, v in sorted(rec.dcor.items()))
    return f"epoch {rec.epoch}/{epochs}  " + " | ".join(parts) + dcor + f"  ({rec.seconds:.1f} s)"
