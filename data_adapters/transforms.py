"""MONAI dictionary transforms keyed by modality: a DICOM file in, a float32 tensor of the model's input shape out."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Resize,
    Resized,
    ResizeWithPadOrCrop,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    Transform,
)

from medsplit.errors import ConfigError

from .dicom import LoadDicomd
from .report import Rejected

__all__ = [
    "AugmentConfig",
    "PipelineConfig",
    "default_pipeline",
    "build_transforms",
    "preprocess_transforms",
    "augment_transforms",
    "Reorient",
    "Reorientd",
    "MatchRank",
    "MatchRankd",
    "Letterbox",
    "Letterboxd",
    "CheckOutputd",
    "ToDHWd",
]

RESIZE_MODES = ("letterbox", "stretch", "pad_crop")


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentations, applied to training samples only, seeded per dataset."""

    enabled: bool = True
    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] = (-1,)  # axes of the output (D, H, W); the last, W, is left-right
    affine_prob: float = 0.5
    rotate_degrees: float = 10.0  # in-plane (axial) rotation, +/- this many degrees
    scale: float = 0.1  # +/- this fraction
    translate: float = 0.05  # +/- this fraction of the image size
    noise_std: float = 0.0  # Gaussian noise on the [0, 1] intensity scale


@dataclass(frozen=True)
class PipelineConfig:
    """Preprocessing of one DICOM modality key; ``default_pipeline`` gives the per-modality defaults."""

    orientation: str | None = "RAS"
    pixdim: tuple[float, ...] | None = None  # resample to this spacing (mm, in (D,) H, W order); None keeps native
    window: tuple[float, float] | None = None  # CT: Hounsfield window (lower, upper) -> [0, 1]
    percentiles: tuple[float, float] | None = None  # MR/CR/DX: intensity percentiles -> [0, 1]
    resize: str = "letterbox"  # letterbox keeps the aspect ratio; stretch fills; pad_crop keeps the scale
    strict_modality: bool = True  # refuse files whose Modality tag contradicts the key's modality
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def default_pipeline(modality: str) -> PipelineConfig:
    """Sound defaults: CT in a broad lung-to-soft-tissue HU window, MR and radiographs by percentiles."""
    m = modality.upper()
    if m == "CT":
        # [-1000, 400] HU keeps air, lung and soft tissue apart; sites set e.g. [-160, 240] for abdomen
        return PipelineConfig(window=(-1000.0, 400.0))
    if m == "MR":
        # MR intensities have no physical unit; robust percentiles make sites comparable
        return PipelineConfig(percentiles=(0.5, 99.5))
    if m in ("CR", "DX"):
        # No left-right flips by default: laterality (heart side, markers) carries meaning in radiographs
        return PipelineConfig(percentiles=(0.5, 99.5),
                              augment=AugmentConfig(flip_prob=0.0, rotate_degrees=5.0))
    raise ConfigError(f"no default pipeline for modality {modality!r}; expected one of CT, MR, CR, DX")


# ---------------------------------------------------------------------------------------------
# array transforms, each with a thin dictionary wrapper

_WORLD = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


class Reorient(Transform):
    """Permute and flip axes so that they run along ``axcodes`` (in the RAS space of the reader's affine).

    MONAI's ``Orientation`` does this through nibabel; this keeps nibabel an optional dependency.
    Oblique images are assigned the nearest axes, as nibabel's ``io_orientation`` does.
    """

    def __init__(self, axcodes: str = "RAS") -> None:
        codes = axcodes.upper()
        if len(codes) != 3 or {_WORLD[c][0] for c in codes} != {0, 1, 2}:
            raise ConfigError(f"axcodes must name each of R/L, A/P, S/I once, got {axcodes!r}")
        self.order = [_WORLD[c][0] for c in codes]
        self.sign = {_WORLD[c][0]: _WORLD[c][1] for c in codes}

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, MetaTensor):
            return img  # no affine, nothing to orient by
        r = img.ndim - 1
        affine = img.affine.detach().cpu().numpy().astype(np.float64)
        cols = np.abs(affine[:3, :r])
        world = [-1] * r
        for j in np.argsort(-cols.max(axis=0)):  # most clearly aligned axes choose first
            free = [i for i in range(3) if i not in world]
            world[j] = max(free, key=lambda i: cols[i, j])
        new_order = sorted(range(r), key=lambda j: self.order.index(world[j]))
        flips = [np.sign(affine[world[j], j]) * self.sign[world[j]] < 0 for j in new_order]
        if new_order == list(range(r)) and not any(flips):
            return img
        data = img.as_tensor().permute(0, *[1 + j for j in new_order])
        flip_dims = [1 + k for k, f in enumerate(flips) if f]
        if flip_dims:
            data = torch.flip(data, flip_dims)
        p = np.eye(4)
        p[:r, :r] = 0.0
        for k, j in enumerate(new_order):  # voxel_old = p @ voxel_new
            if flips[k]:
                p[j, k], p[j, 3] = -1.0, img.shape[1 + j] - 1
            else:
                p[j, k] = 1.0
        out = MetaTensor(data.contiguous(), meta=dict(img.meta))
        out.affine = torch.as_tensor(affine @ p, dtype=img.affine.dtype)
        return out


class MatchRank(Transform):
    """Give a 2D model a 2D image: a volume or multi-frame file yields its middle slice (last axis).

    A 2D image for a 3D model cannot be made into a volume and is rejected.
    """

    def __init__(self, spatial_dims: int) -> None:
        self.spatial_dims = spatial_dims

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        r = img.ndim - 1
        if r == self.spatial_dims:
            return img
        if r == 3 and self.spatial_dims == 2:
            mid = img.shape[-1] // 2
            data = img.as_tensor() if isinstance(img, MetaTensor) else img
            if not isinstance(img, MetaTensor):
                return data[..., mid].contiguous()
            affine = img.affine.clone()
            affine[:, 3] = affine[:, 3] + affine[:, 2] * mid  # origin moves to the chosen slice
            out = MetaTensor(data[..., mid].contiguous(), meta=dict(img.meta))
            out.affine = affine
            return out
        raise Rejected("unsupported", f"a {r}D image cannot feed a model that expects {self.spatial_dims}D input",
                       hint="point this key at series folders (volumes), or use a 2D spatial_size")


class Letterbox(Transform):
    """Resize to fit inside ``spatial_size`` keeping the aspect ratio, then pad to exactly that size."""

    def __init__(self, spatial_size: Sequence[int]) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        src = img.shape[1:]
        scale = min(t / s for t, s in zip(self.spatial_size, src, strict=False))
        fit = [max(1, min(t, int(round(s * scale)))) for t, s in zip(self.spatial_size, src, strict=False)]
        if list(src) != fit:
            img = Resize(fit, mode="area")(img)
        return ResizeWithPadOrCrop(self.spatial_size)(img)


class _Wrap(MapTransform):
    """The dictionary form of an array transform (MONAI's MapTransform contract)."""

    array_cls: type[Transform]

    def __init__(self, keys: str | Sequence[str], *args: Any, allow_missing_keys: bool = False, **kw: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fn = self.array_cls(*args, **kw)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.fn(d[key])
        return d


class Reorientd(_Wrap):
    array_cls = Reorient


class MatchRankd(_Wrap):
    array_cls = MatchRank


class Letterboxd(_Wrap):
    array_cls = Letterbox


class ToDHWd(MapTransform):
    """MONAI's spatial order (C, X, Y[, Z]) to the model's (C, [D,] H, W): slices first, columns last."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            d[key] = x.permute(0, *range(x.ndim - 1, 0, -1)).contiguous()
        return d


class CheckOutputd(MapTransform):
    """Last deterministic step: refuse NaN/inf and any shape other than the configured one."""

    def __init__(self, keys: str | Sequence[str], shape: Sequence[int]) -> None:
        super().__init__(keys)
        self.shape = tuple(shape)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if tuple(x.shape) != self.shape:
                raise Rejected("internal_error", f"pipeline produced shape {tuple(x.shape)}, expected {self.shape}")
            if not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).sum())
                raise Rejected("non_finite", f"{bad} values are NaN or infinite after preprocessing")
        return d


# ---------------------------------------------------------------------------------------------
# chains


def preprocess_transforms(key: str, modality: str, spatial_size: Sequence[int], pipeline: PipelineConfig | None = None,
                          *, load: bool = True) -> list[Transform]:
    """The deterministic part (cached on disk by the imaging dataset).

    ``spatial_size`` is (H, W) or (D, H, W). Inside the chain MONAI's order (X, Y[, Z]) is used,
    so sizes are reversed there and the result is transposed last. With ``load=False`` the input
    under ``key`` is already a channel-first array or MetaTensor in MONAI order.
    """
    p = pipeline or default_pipeline(modality)
    size = tuple(int(s) for s in spatial_size)
    if len(size) not in (2, 3):
        raise ConfigError(f"spatial_size must have 2 or 3 entries, got {size}")
    xyz = size[::-1]
    chain: list[Transform] = []
    if load:
        chain += [LoadDicomd(key, modality, strict_modality=p.strict_modality),
                  EnsureChannelFirstd(key, channel_dim="no_channel")]
    if p.orientation:
        chain.append(Reorientd(key, p.orientation))
    chain.append(MatchRankd(key, len(size)))
    if p.pixdim:
        chain.append(Spacingd(key, pixdim=tuple(p.pixdim)[::-1], mode="bilinear"))
    if p.window is not None:
        lo, hi = p.window
        chain.append(ScaleIntensityRanged(key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    elif p.percentiles is not None:
        lo, hi = p.percentiles
        chain.append(ScaleIntensityRangePercentilesd(key, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True))
    if p.resize == "letterbox":
        chain.append(Letterboxd(key, xyz))
    elif p.resize == "stretch":
        chain.append(Resized(key, xyz, mode="area"))
    elif p.resize == "pad_crop":
        chain.append(ResizeWithPadOrCropd(key, xyz))
    else:
        raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {p.resize!r}")
    # Plain tensors from here on: the disk cache loads with torch.load(weights_only=True)
    chain += [EnsureTyped(key, dtype=torch.float32, track_meta=False), ToDHWd(key), CheckOutputd(key, (1, *size))]
    return chain


def augment_transforms(key: str, spatial_size: Sequence[int], augment: AugmentConfig) -> list[Transform]:
    """The random part, for training samples only; it runs on (C, [D,] H, W) tensors."""
    if not augment.enabled:
        return []
    nd = len(spatial_size)
    chain: list[Transform] = []
    if augment.flip_prob > 0 and augment.flip_axes:
        axes = sorted({a % nd for a in augment.flip_axes})
        chain.append(RandFlipd(key, prob=augment.flip_prob, spatial_axis=axes))
    if augment.affine_prob > 0 and (augment.rotate_degrees or augment.scale or augment.translate):
        rad = math.radians(augment.rotate_degrees)
        rotate = (rad,) if nd == 2 else (rad, 0.0, 0.0)  # in-plane only: about the slice (D) axis in 3D
        chain.append(RandAffined(
            key, prob=augment.affine_prob, rotate_range=rotate,
            scale_range=[augment.scale] * nd,
            translate_range=[augment.translate * s for s in spatial_size],
            mode="bilinear", padding_mode="zeros"))
    if augment.noise_std > 0:
        chain.append(RandGaussianNoised(key, prob=1.0, std=augment.noise_std))
    if chain:
        chain.append(EnsureTyped(key, dtype=torch.float32, track_meta=False))
    return chain


def build_transforms(key: str, modality: str, spatial_size: Sequence[int], pipeline: PipelineConfig | None = None,
                     *, train: bool = False, seed: int = 0, load: bool = True) -> Compose:
    """Preprocessing, plus seeded augmentations when ``train``; output ``key``: float32 (1, *spatial_size)."""
    p = pipeline or default_pipeline(modality)
    chain = preprocess_transforms(key, modality, spatial_size, p, load=load)
    if train:
        chain += augment_transforms(key, spatial_size, p.augment)
    compose = Compose(chain)
    compose.set_random_state(seed=seed)
    return compose


def with_overrides(base: PipelineConfig, overrides: Mapping[str, Any]) -> PipelineConfig:
    """``base`` with some fields replaced; ``augment`` may itself be a partial mapping."""
    o = dict(overrides)
    if "augment" in o and isinstance(o["augment"], Mapping):
        o["augment"] = replace(base.augment, **o["augment"])
    return replace(base, **o)
