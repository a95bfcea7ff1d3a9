"""The card's figures as PNG files: held-out images beside their reconstructions, and leak ROC curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .metrics import leak_auc, roc_curve  # noqa: E402

__all__ = ["reconstruction_figure", "roc_figure", "safe_name"]


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _slice(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (C, D, H, W) -> the first channel's (middle) slice."""
    img = img[0]
    return (img[img.shape[0] // 2] if img.dim() == 3 else img).numpy()


def reconstruction_figure(cut: str, x: torch.Tensor, x_hat: torch.Tensor, ssim: float | None, path: Path) -> Path:
    """Top row: held-out synthetic patients; bottom row: what the decoder rebuilt from their cuts."""
    n = x.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    lo, hi = float(x.min()), float(x.max())
    for i in range(n):
        for row, img in ((0, x[i]), (1, x_hat[i])):
            ax = axes[row][i]
            ax.imshow(_slice(img), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("original")
    axes[1][0].set_ylabel("rebuilt")
    fig.suptitle(f"{cut}: reconstruction from the cut" + (f" (SSIM {ssim:.2f})" if ssim is not None else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def roc_figure(task: str, rocs: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> Path:
    """ROC curves of the norm and direction attacks on ``task``'s labels, pooled over the last epoch."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    for who, attacks in sorted(rocs.items()):
        for attack, (y, s) in sorted(attacks.items()):
            auc = leak_auc(y, s)
            if leak_auc(y, s, either_way=False) < 0.5:
                s = -s  # the attacker's better orientation, as the AUC reports it
            fpr, tpr = roc_curve(y, s)
            ax.plot(fpr, tpr, lw=1.4, label=f"{attack} ({who.split(' via ')[0]}), AUC {auc:.2f}")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"label leakage: {task} (last epoch, pooled)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
