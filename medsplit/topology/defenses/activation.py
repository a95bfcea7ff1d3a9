"""Defenses on what a site sends: per-sample norm clipping and Gaussian noise on the cut activations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ...errors import ConfigError
from .base import CutDefense

__all__ = ["Clip", "GaussianNoise"]


def _positive(value: float, what: str, hint: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a finite number > 0, got {value!r}", hint=hint)


@dataclass(frozen=True)
class Clip(CutDefense):
    """Scales each sample's cut down to an L2 norm of at most ``max_norm`` (before any noise, it bounds what one
    patient can move the cut: the sensitivity that noise is measured against)."""

    max_norm: float
    name: ClassVar[str] = "clip"

    def __post_init__(self) -> None:
        _positive(self.max_norm, "clip max_norm", "give the largest L2 norm a patient's cut may have, e.g. 1.0")

    def activation(self, cut: torch.Tensor, *, train: bool) -> torch.Tensor:
        norms = cut.reshape(cut.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        scale = (self.max_norm / norms).clamp(max=1.0)
        out: torch.Tensor = cut * scale.view(-1, *([1] * (cut.dim() - 1)))
        return out

    def describe(self) -> str:
        return f"clip(max_norm={self.max_norm:g})"


@dataclass(frozen=True)
class GaussianNoise(CutDefense):
    """Adds N(0, (sigma * rms)^2) to every element of the cut, where rms is the batch's root mean square cut value.

    In units of the cut's own size, so a site's encoder cannot shrink the noise by scaling its output up (an
    absolute sigma erodes as training grows the activations). Applied in training and evaluation: the other
    party never sees a clean cut.
    """

    sigma: float
    name: ClassVar[str] = "noise"

    def __post_init__(self) -> None:
        _positive(self.sigma, "noise sigma", "give the noise's standard deviation relative to the cut's RMS, "
                                             "e.g. 0.5")

    def activation(self, cut: torch.Tensor, *, train: bool) -> torch.Tensor:
        rms = cut.detach().pow(2).mean().sqrt()
        return cut + self.sigma * rms * torch.randn_like(cut)

    def describe(self) -> str:
        return f"noise(sigma={self.sigma:g})"
