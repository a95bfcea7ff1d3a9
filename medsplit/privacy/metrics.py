"""How close a reconstruction is (MSE, PSNR, SSIM, per-feature R²) and ROC curves of a leak score."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.metrics import roc_auc

__all__ = ["ssim", "psnr", "r2_per_feature", "roc_curve", "leak_auc"]


def _gaussian(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-x.pow(2) / (2 * sigma**2))
    return w / w.sum()


def _blur(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over every spatial axis of (N, C, *spatial), 'valid' (no padding)."""
    dims = x.dim() - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    c = x.shape[1]
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = w.numel()
        kernel = w.view(1, 1, *shape).expand(c, 1, *shape)
        x = conv(x, kernel, groups=c)
    return x


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, *, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity of Wang et al. (2004) per sample, for 2D (N, C, H, W) or 3D (N, C, D, H, W) images.

    A Gaussian window (``window`` wide, ``sigma``) over valid positions, constants ``(k * data_range)^2``;
    the mean over positions and channels. 1 is identical; about 0 is unrelated structure.
    """
    if x.shape != y.shape or x.dim() not in (4, 5):
        raise ValueError(f"ssim needs two (N, C, H, W) or (N, C, D, H, W) tensors of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    window = min(window, *x.shape[2:])
    x, y = x.double(), y.double()
    w = _gaussian(window, sigma, x.dtype)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = _blur(x, w), _blur(y, w)
    sxx = _blur(x * x, w) - mx * mx
    syy = _blur(y * y, w) - my * my
    sxy = _blur(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


def psnr(mse: float, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error over data of ``data_range``."""
    return math.inf if mse <= 0 else 10 * math.log10(data_range**2 / mse)


def r2_per_feature(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """1 - SSE / SST per column of (N, F) tables (0: no better than each feature's mean; 1: exact)."""
    sst = (x - x.mean(0)).pow(2).sum(0)
    sse = (x - x_hat).pow(2).sum(0)
    return torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-12), torch.zeros_like(sst))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(labels).reshape(-1) > 0.5
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # one point per distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(int((~y).sum()), 1)], np.r_[0.0, tp / max(int(y.sum()), 1)]


def leak_auc(labels: np.ndarray, scores: np.ndarray, *, either_way: bool = True) -> float:
    """AUC of telling the labels apart by ``scores``; ``either_way``: the attacker picks the better orientation."""
    auc = roc_auc(labels, scores)
    return max(auc, 1.0 - auc) if either_way and not math.isnan(auc) else auc
