"""Privacy defenses at the cut, composable per segment; NoPeek (distance correlation) is the first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..errors import ConfigError, DataError

__all__ = ["CutDefense", "NoPeek", "distance_correlation"]


@runtime_checkable
class CutDefense(Protocol):
    """Adds a term to the site's loss from its raw input and its cut activations (segment code is unaware)."""

    name: str

    def loss(self, raw: torch.Tensor, cut: torch.Tensor) -> torch.Tensor: ...


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
class NoPeek:
    """NoPeek (Vepakomma et al., 2019): ``alpha * dCor(raw input, cut activations)`` added to the site's loss."""

    alpha: float
    name: str = "nopeek"

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"NoPeek alpha must be >= 0, got {self.alpha}", hint="use 0 to turn NoPeek off")

    def loss(self, raw: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
        return self.alpha * distance_correlation(raw, cut)
