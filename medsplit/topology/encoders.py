"""A small family of networks a study picks per site and modality, sized from the declared shapes.

``EncoderSpec(kind, options)`` names a builder: ``mlp`` (tables), ``cnn`` (2D or 3D images), MONAI's ``resnet``
and ``densenet`` (2D or 3D images), or ``module`` (``options["module"] = "package.module:factory"``, the escape
hatch: every party imports the factory from its own installed code, never code sent by a peer). Each builder
takes the per-sample input shape and the size of the vector it must output.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from torch import nn

from ..errors import ConfigError, TopologyError
from ..suggest import did_you_mean
from .segments import cnn_encoder, mlp

__all__ = ["EncoderSpec", "ENCODERS", "build_encoder", "load_factory", "modality_kind", "default_encoder"]


@dataclass(frozen=True)
class EncoderSpec:
    """Which network, and its options (``hidden``, ``channels``, ``layers``, ``module`` ...)."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.kind}({opts})" if opts else self.kind


def modality_kind(shape: Sequence[int]) -> str:
    """'table' for a feature vector (F,), 'image' for (C, H, W) or (C, D, H, W)."""
    return "table" if len(shape) == 1 else "image"


def default_encoder(shape: Sequence[int]) -> EncoderSpec:
    """What a modality gets when the study names no encoder: an MLP for a table, a small CNN for an image."""
    return EncoderSpec("mlp" if modality_kind(shape) == "table" else "cnn")


def _image_dims(shape: Sequence[int], what: str) -> int:
    if len(shape) not in (3, 4):
        raise TopologyError(f"{what} takes an image of shape (C, H, W) or (C, D, H, W), but the data has shape "
                            f"{tuple(shape)}", hint="use the mlp encoder for a table of features, or declare the "
                                                    "image's channels first, e.g. [1, 64, 64]")
    return len(shape) - 1


def _mlp(shape: Sequence[int], out: int, opts: Mapping[str, Any]) -> nn.Module:
    hidden = tuple(opts.get("hidden", (64,)))
    flat = [nn.Flatten()] if len(shape) > 1 else []
    return nn.Sequential(*flat, mlp(math.prod(shape), hidden, out, final_activation=True))


def _cnn(shape: Sequence[int], out: int, opts: Mapping[str, Any]) -> nn.Module:
    dims = _image_dims(shape, "the cnn encoder")
    return cnn_encoder(shape[0], tuple(opts.get("channels", (8, 16))), dims, out_features=out)


def _resnet(shape: Sequence[int], out: int, opts: Mapping[str, Any]) -> nn.Module:
    from monai.networks.nets import ResNet

    dims = _image_dims(shape, "the resnet encoder")
    layers = list(opts.get("layers", (1, 1, 1, 1)))
    planes = list(opts.get("planes", (16, 32, 64, 128)))[:len(layers)]
    return nn.Sequential(ResNet("basic", layers, planes, spatial_dims=dims, n_input_channels=shape[0],
                                num_classes=out, conv1_t_stride=2), nn.ReLU())


def _densenet(shape: Sequence[int], out: int, opts: Mapping[str, Any]) -> nn.Module:
    from monai.networks.nets import DenseNet

    dims = _image_dims(shape, "the densenet encoder")
    return nn.Sequential(DenseNet(dims, shape[0], out, init_features=int(opts.get("init_features", 16)),
                                  growth_rate=int(opts.get("growth_rate", 8)),
                                  block_config=tuple(opts.get("blocks", (2, 2, 2)))), nn.ReLU())


def load_factory(reference: str, what: str) -> Callable[..., Any]:
    """``package.module:factory`` from this party's own installed code."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what}: '{reference}' is not package.module:factory",
                          hint="name an importable module and a function in it, e.g. mystudy.models:encoder")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import '{module_name}' here: {exc}",
                          hint="install the package that holds it at this party (every party loads it from its "
                               "own installed code; no code is ever sent between parties)") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{what}: '{module_name}' has no function '{attr}'"
                          f"{did_you_mean(attr, [n for n in dir(module) if not n.startswith('_')])}",
                          hint="name a function that builds the network")
    return cast(Callable[..., Any], factory)


def _module(shape: Sequence[int], out: int, opts: Mapping[str, Any]) -> nn.Module:
    reference = str(opts.get("module", ""))
    built = load_factory(reference, "encoder module")(tuple(shape), out)
    if not isinstance(built, nn.Module):
        raise TopologyError(f"encoder module '{reference}' returned {type(built).__name__}, not a torch.nn.Module",
                            hint="the factory takes (input shape, output size) and returns an nn.Module")
    return built


ENCODERS: dict[str, Callable[[Sequence[int], int, Mapping[str, Any]], nn.Module]] = {
    "mlp": _mlp, "cnn": _cnn, "resnet": _resnet, "densenet": _densenet, "module": _module,
}
#: the options each builder reads; any other option is refused
OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden",), "cnn": ("channels",), "resnet": ("layers", "planes"),
    "densenet": ("init_features", "growth_rate", "blocks"), "module": ("module",),
}


def build_encoder(spec: EncoderSpec, shape: Sequence[int], out_features: int, *, where: str) -> nn.Module:
    """The network for ``spec`` from an input of per-sample ``shape`` to a vector of ``out_features``.

    ``where`` names the place in the study (e.g. "site 'ehr_a' modality 'ehr'") for errors.
    """
    if spec.kind not in ENCODERS:
        raise ConfigError(f"{where}: unknown encoder '{spec.kind}'{did_you_mean(spec.kind, ENCODERS)}",
                          hint=f"use one of: {', '.join(ENCODERS)}")
    unknown = sorted(set(spec.options) - set(OPTIONS[spec.kind]))
    if unknown:
        raise ConfigError(f"{where}: encoder '{spec.kind}' has no option {unknown[0]!r}"
                          f"{did_you_mean(unknown[0], OPTIONS[spec.kind])}",
                          hint=f"its options are: {', '.join(OPTIONS[spec.kind])}")
    if spec.kind == "module" and "module" not in spec.options:
        raise ConfigError(f"{where}: encoder 'module' needs module: package.module:factory",
                          hint="name the factory every party has installed")
    try:
        return ENCODERS[spec.kind](shape, out_features, spec.options)
    except TopologyError as exc:
        raise TopologyError(f"{where}: {exc.message}", hint=exc.hint) from None
