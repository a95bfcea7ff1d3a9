"""Losses and validation metrics per task kind (bce, ce, mse); AUCs without extra dependencies."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["task_loss", "roc_auc", "macro_auc", "task_metrics"]


def task_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean loss of a batch; ``pred`` is the head's raw output."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(pred.reshape(-1), target.reshape(-1).to(pred.dtype))
    if kind == "ce":
        return F.cross_entropy(pred, target.long())
    return F.mse_loss(pred, target.to(pred.dtype).reshape(pred.shape))


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class is absent."""
    y = np.asarray(y_true).reshape(-1) > 0.5
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc(y_true: np.ndarray, logits: np.ndarray) -> float:
    """One-vs-rest AUC averaged over the classes present with both outcomes; NaN if none is."""
    y = np.asarray(y_true).reshape(-1).astype(int)
    aucs = [roc_auc(y == c, logits[:, c]) for c in range(logits.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def task_metrics(kind: str, preds: list[torch.Tensor], targets: list[torch.Tensor]) -> dict[str, float]:
    """Validation metrics that fit the task: loss, plus AUC and accuracy (bce), macro-AUC and accuracy (ce),
    or MSE, MAE and R² (mse)."""
    pred = torch.cat(preds)
    target = torch.cat(targets)
    out = {"val_loss": float(task_loss(kind, pred, target)), "n": int(pred.shape[0])}
    if kind == "bce":
        out["val_auc"] = roc_auc(target.numpy(), pred.reshape(-1).numpy())
        out["val_acc"] = float(((pred.reshape(-1) > 0) == (target.reshape(-1) > 0.5)).float().mean())
    elif kind == "ce":
        out["val_acc"] = float((pred.argmax(1) == target.long()).float().mean())
        out["val_macro_auc"] = macro_auc(target.numpy(), pred.float().numpy())
    else:
        y, p = target.to(pred.dtype).reshape(pred.shape), pred
        out["val_mse"] = out["val_loss"]
        out["val_mae"] = float((p - y).abs().mean())
        var = float(((y - y.mean(0)) ** 2).mean())
        out["val_r2"] = 1.0 - out["val_mse"] / var if var > 0 else float("nan")
    return out
