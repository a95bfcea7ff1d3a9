"""Segment builders that fit medical data: CNN encoders for 2D/3D images, MLPs for EHR, trunks, heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import TopologyError

__all__ = ["conv_block", "cnn_encoder", "cnn_body", "mlp", "mlp_encoder", "head", "split_sequential"]


def conv_block(spatial_dims: int, cin: int, cout: int, stride: int) -> nn.Module:
    """A 3x3 convolution, batch norm and ReLU, for 2D or 3D images."""
    # MONAI's Convolution block gives one code path for 2D and 3D images.
    from monai.networks.blocks import Convolution

    return Convolution(spatial_dims, cin, cout, strides=stride, kernel_size=3, act="relu", norm="batch")


def _pool(spatial_dims: int) -> nn.Module:
    # Max, not mean: a small lesion is one bright spot, and averaging over the image dilutes it.
    return nn.AdaptiveMaxPool2d(1) if spatial_dims == 2 else nn.AdaptiveMaxPool3d(1)


def cnn_encoder(in_channels: int = 1, channels: Sequence[int] = (8, 16), spatial_dims: int = 2,
                out_features: int | None = None) -> nn.Sequential:
    """Strided 3x3 convolutions (each halves the image). With ``out_features``, pooled to a vector.

    Without it the cut is a feature map (channels[-1], H/2^k, W/2^k), as in the paper's image cuts.
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in channels:
        layers.append(conv_block(spatial_dims, cin, cout, stride=2))
        cin = cout
    if out_features is not None:
        layers += [_pool(spatial_dims), nn.Flatten(), nn.Linear(cin, out_features)]
    return nn.Sequential(*layers)


def cnn_body(in_channels: int, channels: Sequence[int] = (32,), spatial_dims: int = 2, out_features: int = 32,
             final_activation: bool = True) -> nn.Sequential:
    """Server-side continuation of a feature-map cut: convolutions, global pooling, a linear layer."""
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in channels:
        layers.append(conv_block(spatial_dims, cin, cout, stride=2))
        cin = cout
    layers += [_pool(spatial_dims), nn.Flatten(), nn.Linear(cin, out_features)]
    if final_activation:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mlp(in_features: int, hidden: Sequence[int], out_features: int, final_activation: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them; a trunk when ``final_activation``, a head otherwise."""
    layers: list[nn.Module] = []
    sizes = [in_features, *hidden, out_features]
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mlp_encoder(in_features: int, hidden: Sequence[int] = (64,), out_features: int = 16) -> nn.Sequential:
    """The site segment for tabular EHR features: an MLP ending in a ReLU cut layer."""
    return mlp(in_features, hidden, out_features, final_activation=True)


def head(in_features: int, out_features: int = 1, hidden: Sequence[int] = ()) -> nn.Sequential:
    """A task head: raw outputs (logits); the loss applies the sigmoid or softmax."""
    return mlp(in_features, hidden, out_features, final_activation=False)


def split_sequential(model: nn.Sequential, cuts: Sequence[int]) -> list[nn.Sequential]:
    """Split a user's ``nn.Sequential`` before each index in ``cuts``: cuts=[2, 5] gives [0:2], [2:5], [5:].

    The pieces share the original modules (no copy), so training them trains ``model``.
    """
    n = len(model)
    bounds = [0, *cuts, n]
    if list(cuts) != sorted(set(cuts)) or not all(0 < c < n for c in cuts):
        raise TopologyError(f"cut indices must be strictly increasing and inside (0, {n}); got {list(cuts)}")
    return [nn.Sequential(*[model[i] for i in range(bounds[k], bounds[k + 1])]) for k in range(len(bounds) - 1)]
