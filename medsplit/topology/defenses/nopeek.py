"""NoPeek (Vepakomma et al., 2019): lower the distance correlation between a site's raw input and its cut."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from ...errors import ConfigError, DataError
from .base import CutDefense

__all__ = ["NoPeek", "distance_correlation", "NOPEEK_SCALES"]

NOPEEK_SCALES = ("relative", "absolute")


def _centered_distances(x: torch.Tensor) -> torch.Tensor:
    # Direct differences, not the Gram trick: the trick loses precision for wide inputs such as images.
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Sample distance correlation dCor(x, z) of Székely et al. (2007), differentiable, O(n^2) per batch.

    Rows are samples; each sample is flattened. Returns a scalar in [0, 1].
    """
    if x.shape[0] != z.shape[0]:
        raise DataError(f"distance_correlation needs the same number of rows, got {x.shape[0]} and {z.shape[0]}")
    if x.shape[0] < 2:
        raise DataError("distance_correlation needs at least 2 samples")
    a = _centered_distances(x.reshape(x.shape[0], -1))
    b = _centered_distances(z.reshape(z.shape[0], -1).to(a.dtype))
    dcov2_xz = (a * b).mean()
    dvar_x = (a * a).mean()
    dvar_z = (b * b).mean()
    denom = torch.sqrt((dvar_x * dvar_z).clamp_min(eps))
    return torch.sqrt((dcov2_xz / denom).clamp_min(eps))


@dataclass(frozen=True)
class NoPeek(CutDefense):
    """NoPeek: the site also descends ``dCor(raw input, cut)``, weighted by ``alpha``.

    ``scale="absolute"`` is the paper's loss, ``task loss + alpha * dCor``. Its pull on the cut is not what alpha
    suggests: at the start of training the dCor gradient is 1x to 7x the task's at an EHR cut with alpha 0.5
    (it depends on the head's initial weights and on the batch size, since sample dCor is biased upwards on
    small batches), and a run of a few dozen steps spends them decorrelating instead of learning
    (docs/privacy.md, "NoPeek's scale"). ``scale="relative"`` (the default) fixes the pull instead: the
    dCor gradient is rescaled to ``alpha`` times the norm of the task gradient that reached the cut, in every
    step, so alpha means the same on 100 patients as on 100,000, at any batch size.
    """

    alpha: float
    scale: Literal["relative", "absolute"] = "relative"
    name: ClassVar[str] = "nopeek"

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"NoPeek alpha must be a finite number >= 0, got {self.alpha!r}",
                              hint="use 0 to turn NoPeek off")
        if self.scale not in NOPEEK_SCALES:
            raise ConfigError(f"NoPeek scale must be one of {', '.join(NOPEEK_SCALES)}, got {self.scale!r}",
                              hint="'relative': alpha times the task's gradient at the cut; 'absolute': the "
                                   "paper's alpha * dCor added to the loss")

    def cut_gradient(self, raw: torch.Tensor | None, cut: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.alpha == 0 or cut.shape[0] < 2:
            return grad
        if raw is None:
            raise ConfigError("NoPeek is on a segment that reads no raw data at its party, so there is nothing to "
                              "decorrelate its output from", hint="put NoPeek on a site's cut segment")
        z = cut.detach().requires_grad_(True)
        with torch.enable_grad():
            (g_dcor,) = torch.autograd.grad(distance_correlation(raw.detach(), z), z)
        if self.scale == "absolute":
            return grad + self.alpha * g_dcor
        norm = g_dcor.norm()
        if float(norm) == 0.0:
            return grad
        out: torch.Tensor = grad + (self.alpha * grad.norm() / norm) * g_dcor
        return out

    def describe(self) -> str:
        return f"nopeek(alpha={self.alpha:g}{', absolute' if self.scale == 'absolute' else ''})"
