"""Synthetic patients made in memory: images with lesion-like blobs and EHR labs driven by one latent outcome."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CohortSpec", "make_cohort"]


@dataclass(frozen=True)
class CohortSpec:
    """One site's patients. ``shift`` and ``noise`` make sites differ as real scanners and populations do."""

    patients: int = 400
    image_size: int = 32
    ehr_features: int = 12
    shift: float = 0.0
    noise: float = 0.5
    age_mean: float = 0.0


def make_cohort(spec: CohortSpec, seed: int) -> dict[str, torch.Tensor]:
    """{'image': (n,1,S,S), 'ehr': (n,F), 'diagnosis': (n,), 'mortality': (n,)} from one latent severity."""
    g = torch.Generator().manual_seed(seed)
    n, size = spec.patients, spec.image_size
    severity = torch.randn(n, generator=g)
    diagnosis = (severity + 0.4 * torch.randn(n, generator=g) > 0).float()
    age = spec.age_mean + torch.randn(n, generator=g)
    mortality = (0.9 * severity + 0.5 * age + 0.4 * torch.randn(n, generator=g) > 0.6).float()

    # A bright blob whose contrast grows with severity, at a random place, on a noisy background.
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    cy = torch.randint(size // 4, 3 * size // 4, (n,), generator=g).float()
    cx = torch.randint(size // 4, 3 * size // 4, (n,), generator=g).float()
    radius = size / 8
    dist2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    blob = torch.exp(-dist2 / (2 * radius**2))
    contrast = torch.sigmoid(2.5 * severity)[:, None, None]
    image = spec.shift + 1.5 * contrast * blob + spec.noise * torch.randn(n, size, size, generator=g)

    f = spec.ehr_features
    ehr = torch.randn(n, f, generator=g)
    ehr[:, 0] = age
    ehr[:, 1] = (torch.rand(n, generator=g) > 0.5).float()  # sex
    signal = max(1, (f - 2) // 2)
    weights = torch.linspace(1.0, 0.4, signal)
    ehr[:, 2:2 + signal] = severity[:, None] * weights + 0.8 * torch.randn(n, signal, generator=g)
    return {"image": image.unsqueeze(1), "ehr": ehr, "diagnosis": diagnosis, "mortality": mortality}
