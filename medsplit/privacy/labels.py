"""Label leakage from cut gradients (Li et al., 2021): the norm attack and the direction (cosine) attack.

The attacker is a party that receives the gradient of a loss computed at another party, per patient, and
lacks the labels: the server of a U-shaped topology, or a site of a vertical one. Scores are computed per
batch (the model moves between batches) and the leak AUC is their mean over batches.

- norm: score = |g_i|; with a rare positive class, positives' gradients are larger.
- direction: the attacker knows the label of one positive patient in the batch (the paper's assumption) and
  scores every other patient by cos(g_i, g_known); gradients of opposite labels point in opposite directions.

Both are given the better orientation (the AUC is at least 0.5): a defense that flips the score's sign has
not hidden the labels, and the card must not call it private.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .metrics import leak_auc

__all__ = ["norm_scores", "direction_scores", "LabelLeak", "label_leakage"]


def norm_scores(grad: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each patient's gradient."""
    out: torch.Tensor = grad.reshape(grad.shape[0], -1).double().norm(dim=1)
    return out


def direction_scores(grad: torch.Tensor, reference: int) -> torch.Tensor:
    """Cosine similarity of each patient's gradient with patient ``reference``'s."""
    flat = grad.reshape(grad.shape[0], -1).double()
    out: torch.Tensor = torch.nn.functional.cosine_similarity(flat, flat[reference].unsqueeze(0), dim=1, eps=1e-30)
    return out


@dataclass
class LabelLeak:
    """Mean per-batch leak AUCs, and the scores of the last batches pooled (for ROC curves)."""

    norm_auc: float | None
    direction_auc: float | None
    batches: int
    patients: int
    positives: int
    pooled: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def label_leakage(batches: Sequence[tuple[torch.Tensor, torch.Tensor]], pool_last: int = 0) -> LabelLeak:
    """Both attacks on each (gradient, binary labels) batch; ``pool_last`` batches' scores are kept for a ROC
    curve (every batch when 0)."""
    norm, direction = [], []
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"norm": ([], []), "direction": ([], [])}
    keep_from = len(batches) - pool_last if pool_last else 0
    patients = positives = 0
    for i, (grad, labels) in enumerate(batches):
        y = labels.reshape(-1).double().numpy() > 0.5
        patients += len(y)
        positives += int(y.sum())
        if 0 < y.sum() < len(y):
            s = norm_scores(grad).numpy()
            norm.append(leak_auc(y, s))
            if i >= keep_from:
                pooled["norm"][0].append(y)
                pooled["norm"][1].append(s)
        ref = int(np.flatnonzero(y)[0]) if y.any() else -1
        rest = np.arange(len(y)) != ref
        if ref >= 0 and 0 < y[rest].sum() < rest.sum():
            s = direction_scores(grad, ref).numpy()[rest]
            direction.append(leak_auc(y[rest], s))
            if i >= keep_from:
                pooled["direction"][0].append(y[rest])
                pooled["direction"][1].append(s)
    return LabelLeak(float(np.mean(norm)) if norm else None, float(np.mean(direction)) if direction else None,
                     len(batches), patients, positives,
                     {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in pooled.items() if v[0]})
