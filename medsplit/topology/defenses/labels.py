"""Defenses for labels that stay at a site: perturb the cut gradient it sends back (Li et al., 2021).

In a U-shaped or vertical U-shaped topology the label owner sends the gradient of the loss with respect to
the other party's output. Per patient, that gradient's norm and direction give the label away: positive and
negative patients' gradients point in opposite directions, and the rarer class has larger norms. Both
defenses here add Gaussian noise to each patient's gradient before it leaves:

- ``MaxNorm``: the paper's heuristic; noise that lifts every gradient's expected squared norm to the batch's
  largest, which blinds the norm attack but not the direction attack;
- ``Marvell``: the paper's optimised noise; per class a covariance along the difference of the two classes'
  mean gradients and across it, chosen to minimise the sum of KL divergences between the two classes'
  perturbed gradient distributions (a bound on any attack's leak AUC) under a noise power budget
  ``strength * ||mean positive gradient - mean negative gradient||^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ...errors import ConfigError, DataError
from .base import CutDefense

__all__ = ["MaxNorm", "Marvell", "marvell_covariances"]


def _binary(labels: torch.Tensor | None, who: str) -> torch.Tensor:
    if labels is None:
        raise ConfigError(f"{who} needs the labels of the task behind its segment, and there are none here",
                          hint="put label defenses on a segment at the site that owns a task's labels, whose input "
                               "comes from another party (the tail of a U-shaped topology)")
    y = labels.reshape(-1)
    if not bool(((y == 0) | (y == 1)).all()):
        raise DataError(f"{who} protects binary labels (0 or 1), but this task's labels hold other values",
                        hint="use max_norm for multiclass or regression tasks")
    return y > 0.5


@dataclass(frozen=True)
class MaxNorm(CutDefense):
    """Li et al.'s max-norm heuristic: per patient, N(0, (max_j |g_j|^2 - |g_i|^2) / d) on each coordinate."""

    name: ClassVar[str] = "max_norm"
    protects: ClassVar[Literal["inputs", "labels"]] = "labels"

    def label_gradient(self, grad: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        flat = grad.reshape(grad.shape[0], -1)
        sq = flat.pow(2).sum(1)
        std = ((sq.max() - sq).clamp_min(0) / flat.shape[1]).sqrt()
        out: torch.Tensor = grad + (std.unsqueeze(1) * torch.randn_like(flat)).view_as(grad)
        return out


def _sym_kl(l10: Any, l20: Any, l11: Any, l21: Any, u: float, v: float, d: int, g: float) -> Any:
    """Sum of the two KL divergences between N(g0, (u + Sigma0)) and N(g1, (v + Sigma1)), up to constants:
    each Sigma_k has ``l1k`` along g1 - g0 and ``l2k`` on each of the d - 1 directions across it."""
    a0, a1 = l10 + u, l11 + v
    out = (a0 + g) / a1 + (a1 + g) / a0
    if d > 1:
        b0, b1 = l20 + u, l21 + v
        out = out + (d - 1) * (b0 / b1 + b1 / b0)
    return out


_STEPS = 30  # budget shares on a grid of 1/30: C(33, 3) = 5456 candidate covariances, evaluated at once


def _share_grid() -> np.ndarray:
    rows = []
    for bars in combinations(range(_STEPS + 3), 3):  # stars and bars: 4 non-negative shares summing to 1
        cuts = (-1, *bars, _STEPS + 3)
        rows.append([cuts[i + 1] - cuts[i] - 1 for i in range(4)])
    return np.asarray(rows, dtype=np.float64) / _STEPS


_SHARES = _share_grid()


def marvell_covariances(u: float, v: float, d: int, g: float, p: float, power: float) -> tuple[float, ...]:
    """(l10, l20, l11, l21): the noise covariances of the negative (0) and positive (1) class, along (1) and
    across (2) the difference of the class means, minimising ``_sym_kl`` under the power constraint
    ``p * (l11 + (d-1) l21) + (1-p) * (l10 + (d-1) l20) <= power``.

    ``u``, ``v``: per-coordinate variance of the negative and positive gradients; ``g``: squared distance
    between the class means; ``p``: the fraction of positives. More noise never raises the divergence, so the
    budget is spent in full; how it is shared among the four variances is searched on a grid.
    """
    if power <= 0 or g <= 0:
        return (0.0, 0.0, 0.0, 0.0)
    across = max(d - 1, 1) if d > 1 else math.inf
    s = _SHARES if d > 1 else _SHARES[(_SHARES[:, 1] == 0) & (_SHARES[:, 3] == 0)]
    l10 = s[:, 0] * power / (1 - p)
    l20 = s[:, 1] * power / ((1 - p) * across)
    l11 = s[:, 2] * power / p
    l21 = s[:, 3] * power / (p * across)
    eps = 1e-12 * max(g, 1e-30)  # a class with no spread and no noise: a point mass, infinitely far from the other
    with np.errstate(divide="ignore", invalid="ignore"):
        obj = _sym_kl(l10, l20, l11, l21, u + eps, v + eps, d, g)
    best = int(np.nanargmin(obj))
    return float(l10[best]), float(l20[best]), float(l11[best]), float(l21[best])


@dataclass(frozen=True)
class Marvell(CutDefense):
    """Marvell (Li et al., 2021): optimised per-class Gaussian noise on the cut gradient, with a power budget of
    ``strength`` times the squared distance between the batch's mean positive and mean negative gradients."""

    strength: float = 1.0
    name: ClassVar[str] = "marvell"
    protects: ClassVar[Literal["inputs", "labels"]] = "labels"
    # The last batch's solution, for a batch that holds one class only (mutable state of a frozen dataclass).
    _last: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.strength, (int, float)) and math.isfinite(self.strength) and self.strength > 0):
            raise ConfigError(f"Marvell strength must be a finite number > 0, got {self.strength!r}",
                              hint="the noise power as a multiple of |g1 - g0|^2; the paper uses 0.1 to 10")

    def label_gradient(self, grad: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        pos = _binary(labels, "Marvell")
        flat = grad.reshape(grad.shape[0], -1).double()
        n, d = flat.shape
        if 0 < int(pos.sum()) < n:
            g1, g0 = flat[pos], flat[~pos]
            diff = g1.mean(0) - g0.mean(0)
            g = float(diff.pow(2).sum())
            u = float(g0.var(0, unbiased=False).mean())
            v = float(g1.var(0, unbiased=False).mean())
            lams = marvell_covariances(u, v, d, g, float(pos.float().mean()), self.strength * g)
            direction = diff / diff.norm().clamp_min(1e-30)
            self._last.update(lams=lams, direction=direction)
        elif "lams" in self._last and self._last["direction"].shape[0] == d:
            lams, direction = self._last["lams"], self._last["direction"]
        else:
            return grad  # one class only, and no earlier batch to estimate the class means from
        l10, l20, l11, l21 = lams
        along = torch.where(pos, math.sqrt(l11), math.sqrt(l10)).double()
        across = torch.where(pos, math.sqrt(l21), math.sqrt(l20)).double()
        z = torch.randn(n, d, dtype=torch.float64)
        noise = across.unsqueeze(1) * z + ((along - across) * (z @ direction)).unsqueeze(1) * direction
        out: torch.Tensor = (flat + noise).to(grad.dtype).view_as(grad)
        return out

    def describe(self) -> str:
        return f"marvell(strength={self.strength:g})"
