"""Model inversion: a decoder that maps what a cut sends back to the raw input it came from.

The threat model of He et al. (2019)'s inverse network: the attacker (the party that receives the cut) has
auxiliary patients from the same distribution and the site segment's outputs for them (black-box queries, or
the trained segment itself after training). It trains a decoder on those pairs and applies it to the cuts of
patients it never saw. The card reports how close the decoder gets on held-out patients: MSE, PSNR and SSIM
for images, per-feature R² for tables, next to a baseline that predicts the auxiliary patients' mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .metrics import psnr, r2_per_feature, ssim

__all__ = ["Decoder", "ReconstructionResult", "train_decoder", "reconstruct", "score_reconstruction"]


def _conv(dims: int, cin: int, cout: int) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, 3, padding=1)


class Decoder(nn.Module):
    """Cut (a vector or a feature map) -> raw input (an image of 2 or 3 spatial dims, or a table row).

    Feature maps are upsampled by convolutions; vectors first go through a linear layer to a small map (images)
    or an MLP (tables). Inputs are standardised with the auxiliary cuts' statistics, so a clipped or scaled
    cut does not handicap the attacker.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cut_shape: tuple[int, ...], target_shape: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        self.cut_shape, self.target_shape = tuple(cut_shape), tuple(target_shape)
        self.register_buffer("mean", torch.zeros(cut_shape))
        self.register_buffer("std", torch.ones(cut_shape))
        n_in = math.prod(cut_shape)
        if len(target_shape) == 1:
            self.net: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 4 * width), nn.ReLU(),
                                                nn.Linear(4 * width, 4 * width), nn.ReLU(),
                                                nn.Linear(4 * width, target_shape[0]))
            return
        dims = len(target_shape) - 1
        size = tuple(target_shape[1:])
        if len(cut_shape) != dims + 1:  # a vector: two dense layers straight to the whole input
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 4 * width), nn.ReLU(),
                                     nn.Linear(4 * width, math.prod(target_shape)), nn.Unflatten(1, target_shape))
            return
        # A feature map: a convolution, then transposed convolutions that double the size and halve the width.
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        layers: list[nn.Module] = [_conv(dims, cut_shape[0], width), nn.ReLU()]
        current, w = tuple(cut_shape[1:]), width
        while any(c < s for c, s in zip(current, size, strict=True)):
            nxt = max(w // 2, 16)
            layers += [up(w, nxt, 4, stride=2, padding=1), nn.ReLU()]
            current, w = tuple(2 * c for c in current), nxt
        if current != size:
            layers.append(nn.Upsample(size=size, mode="nearest"))
        layers.append(_conv(dims, w, target_shape[0]))
        self.net = nn.Sequential(*layers)

    def forward(self, cut: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((cut - self.mean) / self.std)
        return out


def train_decoder(cuts: torch.Tensor, targets: torch.Tensor, *, steps: int = 400, batch_size: int = 32,
                  lr: float = 2e-3, seed: int = 0) -> Decoder:
    """A decoder fitted by MSE on (cut, raw input) pairs of auxiliary patients."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        dec = Decoder(tuple(cuts.shape[1:]), tuple(targets.shape[1:]))
    dec.mean.copy_(cuts.mean(0))
    dec.std.copy_(cuts.std(0).clamp_min(1e-6) if cuts.shape[0] > 1 else torch.ones_like(dec.std))
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    n = cuts.shape[0]
    dec.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        loss = nn.functional.mse_loss(dec(cuts[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call,unused-ignore]
        opt.step()
        sched.step()
    return dec.eval()


def reconstruct(decoder: Decoder, cuts: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([decoder(cuts[i:i + batch_size]) for i in range(0, cuts.shape[0], batch_size)])


@dataclass
class ReconstructionResult:
    """How close the decoder came on held-out patients, and the same numbers for the auxiliary mean."""

    kind: str  # "image" or "table"
    mse: float
    psnr: float
    ssim: float | None
    r2: float | None
    baseline: dict[str, float | None]
    r2_per_feature: list[float] | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"mse": self.mse, "psnr": self.psnr, "ssim": self.ssim, "r2": self.r2,
                                  "baseline": self.baseline}
        if self.r2_per_feature is not None:
            out["r2_per_feature"] = self.r2_per_feature
        return out


def score_reconstruction(x: torch.Tensor, x_hat: torch.Tensor, x_aux_mean: torch.Tensor,
                         data_range: float | None = None) -> ReconstructionResult:
    """MSE, PSNR (over ``data_range``, default the held-out data's max - min) and SSIM for images (N, C, ...),
    or MSE, PSNR and mean per-feature R² for tables (N, F). SSIM is taken on intensities shifted to start at 0."""
    x, x_hat = x.float(), x_hat.float()
    lo = float(x.min())
    rng = float(data_range if data_range is not None else (x.max() - lo))
    base = x_aux_mean.float().expand_as(x)

    def numbers(pred: torch.Tensor) -> dict[str, float | None]:
        mse = float((pred - x).pow(2).mean())
        out: dict[str, float | None] = {"mse": mse, "psnr": psnr(mse, rng)}
        if x.dim() >= 4:
            # On intensities from 0 (as SSIM's constants assume): on zero-centred images its luminance term
            # divides by local means near 0 and calls a near-perfect reconstruction dissimilar.
            out["ssim"] = float(ssim(x - lo, pred - lo, rng).mean())
        else:
            out["r2"] = float(r2_per_feature(x, pred).mean())
        return out

    got, baseline = numbers(x_hat), numbers(base)
    if x.dim() >= 4:
        return ReconstructionResult("image", got["mse"], got["psnr"], got["ssim"], None, baseline)  # type: ignore[arg-type]
    per = [round(float(v), 4) for v in r2_per_feature(x, x_hat)]
    return ReconstructionResult("table", got["mse"], got["psnr"], None, got["r2"], baseline, per)  # type: ignore[arg-type]
