"""Synthetic patients made in memory: images with lesion-like blobs and EHR labs driven by one latent outcome."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import SiteData, TensorTable
from .topology.model import Topology
from .topology.presets import PRESETS, PresetConfig

__all__ = ["CohortSpec", "make_cohort", "preset_data"]


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


def preset_data(topology: Topology, cfg: PresetConfig, seed: int, patients: int = 480,
                val_fraction: float = 0.25) -> dict[str, SiteData]:
    """In-memory synthetic data for every site of a preset topology.

    Sites of a vertical layout see different columns of the same patients (same rows, same order); every
    other site gets its own patients, with its own scanner shift, noise and age mix (non-IID, as hospitals are).
    """
    size = cfg.image_shape[-1]
    n_val = max(2, int(patients * val_fraction))
    vertical = PRESETS[topology.name].layout == "vertical" if topology.name in PRESETS else False
    out: dict[str, SiteData] = {}
    shared = None
    for i, party in enumerate(p for p in topology.parties if p.data):
        if vertical:
            shared = shared or make_cohort(CohortSpec(patients + n_val, size, cfg.ehr_features), seed)
            cohort = shared
        else:
            spec = CohortSpec(patients + n_val, size, cfg.ehr_features, shift=0.3 * i, noise=0.4 + 0.1 * i,
                              age_mean=0.3 * (i - 1))
            cohort = make_cohort(spec, seed * 101 + i)
        # Each site normalises its own images (as MONAI's NormalizeIntensity would): the scanner offset is
        # removed, the noise level is not, so sites stay non-IID.
        img = cohort["image"]
        flat = img.reshape(img.shape[0], -1)
        cohort = {**cohort, "image": ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(img)}
        if len(cfg.image_shape) == 4:  # 3D: stack the slice into a small volume
            cohort["image"] = cohort["image"].unsqueeze(2).expand(-1, -1, cfg.image_shape[1], -1, -1).contiguous()
        keys = list(party.data) + list(party.labels)
        out[party.name] = SiteData(TensorTable({k: cohort[k][:patients] for k in keys}),
                                   TensorTable({k: cohort[k][patients:] for k in keys}))
    return out
