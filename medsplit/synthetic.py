"""Synthetic patients made in memory: images with lesion-like blobs and EHR labs driven by one latent outcome."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import SiteData, TensorTable
from .plan.plan import Plan
from .topology.encoders import modality_kind
from .topology.model import Topology
from .topology.presets import PRESETS, PresetConfig

__all__ = ["CohortSpec", "make_cohort", "preset_data", "study_data"]


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


def _image(severity: torch.Tensor, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """(n, C, H, W) or (n, C, D, H, W): a bright blob whose contrast grows with severity, on noise, per-sample
    normalised (as a site's pipeline would)."""
    n, h, w = severity.shape[0], shape[-2], shape[-1]
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    cy = h / 4 + torch.rand(n, generator=g) * h / 2
    cx = w / 4 + torch.rand(n, generator=g) * w / 2
    radius = max(min(h, w) / 8, 1.0)
    blob = torch.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / (2 * radius**2))
    plane = 1.5 * torch.sigmoid(2.5 * severity)[:, None, None] * blob
    lead = shape[:-2]  # (C,) or (C, D)
    img = plane.view(n, *([1] * len(lead)), h, w) + 0.5 * torch.randn(n, *lead, h, w, generator=g)
    flat = img.reshape(n, -1)
    return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(img)


def _table(severity: torch.Tensor, features: int, g: torch.Generator) -> torch.Tensor:
    """(n, F): the first half of the columns carry severity, with decreasing weight; the rest are noise."""
    n = severity.shape[0]
    out = torch.randn(n, features, generator=g)
    signal = max(1, features // 2)
    out[:, :signal] = severity[:, None] * torch.linspace(1.0, 0.4, signal) + 0.8 * torch.randn(n, signal, generator=g)
    return out


def _labels(severity: torch.Tensor, loss: str, shape: tuple[int, ...], classes: int, g: torch.Generator
            ) -> torch.Tensor:
    noisy = severity + 0.4 * torch.randn(severity.shape[0], generator=g)
    if loss == "bce":
        return (noisy > 0).float()
    if loss == "ce":  # classes of about equal size, by quantile of the noisy severity
        edges = torch.quantile(noisy, torch.linspace(0, 1, classes + 1)[1:-1])
        return torch.bucketize(noisy, edges)
    values = noisy[:, None] * torch.linspace(1.0, 0.5, max(1, int(torch.tensor(shape).prod()) if shape else 1))
    return values.reshape(severity.shape[0], *shape) if shape else values[:, 0]


def study_data(plan: Plan, seed: int, patients: int = 480, val_fraction: float = 0.25) -> dict[str, SiteData]:
    """In-memory synthetic patients for any compiled topology: every site's declared data keys and shapes
    (tables, 2D or 3D images) and the labels it owns, as each task's kind needs them.

    All of it follows one latent severity per patient. Sites of a joint topology hold the same patients in
    the same order; in a turns or parallel one each site has its own.
    """
    topology = plan.topology
    n_val = max(2, int(patients * val_fraction))
    n = patients + n_val
    joint = topology.schedule == "joint"
    out: dict[str, SiteData] = {}
    for i, party in enumerate(p for p in topology.parties if p.data):
        g = torch.Generator().manual_seed(seed if joint else seed * 101 + i)
        severity = torch.randn(n, generator=g)
        cols = {k: _table(severity, shape[0], g) if modality_kind(shape) == "table" else _image(severity, shape, g)
                for k, shape in party.data.items()}
        tasks = {t.label: t for t in topology.tasks}
        for label in party.labels:  # a label no task reads is still a column the site declares: binary
            task = tasks.get(label)
            shape, _ = plan.label_spec(task) if task is not None else ((), torch.float32)
            classes = plan.out_shapes[task.head][0] if task is not None and task.loss == "ce" else 2
            cols[label] = _labels(severity, task.loss if task is not None else "bce", shape, classes, g)
        out[party.name] = SiteData(TensorTable({k: v[:patients] for k, v in cols.items()}),
                                   TensorTable({k: v[patients:] for k, v in cols.items()}))
    return out
