"""Codecs for cut tensors: fewer bytes for activations and gradients, chosen per edge; the one codec registry.

A chain is an optional sparsifier (``topk:F``) followed by an optional quantizer (``fp16``, ``bf16``,
``int8``): ``["int8"]``, ``["topk:0.1", "int8"]``. It turns a float32 tensor of shape (batch, ...) into one
uint8 payload whose length is a function of that shape alone, so a receiver knows the exact length before
it reads a byte and refuses any other; padding and unused bits must be zero, so no byte of a payload can
carry anything but the tensor. The Wire encodes after its checks of what may leave, and decodes before its
checks of what arrived (``wire.py``); transports only ever see the payload bytes.

What each codec promises, elementwise, for a tensor ``x`` (the tests hold each to it):

    fp16    |x' - x| <= |x| * 2**-11 + 2**-25; a value beyond +-65504 is refused at the sender (use bf16)
    bf16    |x' - x| <= |x| * 2**-8 (+ 2**-133 below float32's normal range)
    int8    |x' - x| <= (max_c - min_c) / 510 + 2**-20 * max(|min_c|, |max_c|), c the value's channel
            (dim 1; per sample for the values that topk keeps); one byte a value plus 8 bytes a channel
    topk:F  keeps the ceil(F * n) largest magnitudes of each sample's n values; the rest arrive as zeros,
            so their error is their own size, at most the sample's smallest kept magnitude. Positions go as
            a bitmask (n/8 bytes a sample) or as int32 indices, whichever is smaller.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ProtocolError, TopologyError
from ..suggest import did_you_mean
from .message import Kind

__all__ = ["CodecSpec", "CODECS", "CodecChain", "codec_chain", "edge_codecs", "CUT_KINDS"]

CUT_KINDS = (Kind.ACTIVATION, Kind.GRADIENT)  # the only kinds a codec applies to
_ALIGN = 8  # the index part of a payload is padded to this, so the values part can be viewed as its dtype
_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def _malformed(codec: str, detail: str) -> ProtocolError:
    return ProtocolError(f"the {codec} payload is malformed: {detail}",
                         hint="the peer's codec is faulty or the payload was altered; the message is refused")


def _pad(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _groups(shape: tuple[int, ...], dim: int | None) -> int:
    return 1 if dim is None else shape[dim]


class Quantizer(abc.ABC):
    """Values to fewer bytes each. ``dim``: the dimension whose entries get their own scale (None: one)."""

    name: str

    @abc.abstractmethod
    def nbytes(self, shape: tuple[int, ...], dim: int | None) -> int: ...

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, dim: int | None) -> torch.Tensor: ...

    @abc.abstractmethod
    def decode(self, buf: torch.Tensor, shape: tuple[int, ...], dim: int | None) -> torch.Tensor: ...

    @abc.abstractmethod
    def bound(self, x: torch.Tensor, dim: int | None) -> torch.Tensor: ...


class HalfFloat(Quantizer):
    """fp16 or bf16: a plain cast, two bytes a value."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.name = "fp16" if dtype is torch.float16 else "bf16"

    def nbytes(self, shape: tuple[int, ...], dim: int | None) -> int:
        return 2 * math.prod(shape)

    def encode(self, x: torch.Tensor, dim: int | None) -> torch.Tensor:
        y = x.to(self.dtype)
        if self.dtype is torch.float16 and bool(y.isinf().any()):
            raise ProtocolError(f"a tensor of shape {tuple(x.shape)} has values beyond fp16's range (+-65504)",
                                hint="use bf16 on this edge (float32's range in two bytes), or int8")
        return y.reshape(-1).view(torch.uint8)

    def decode(self, buf: torch.Tensor, shape: tuple[int, ...], dim: int | None) -> torch.Tensor:
        return buf.view(self.dtype).reshape(shape).float()  # NaN or Inf bit patterns: the Wire's finite check

    def bound(self, x: torch.Tensor, dim: int | None) -> torch.Tensor:
        if self.dtype is torch.float16:
            return x.abs() * 2.0 ** -11 + 2.0 ** -25
        return x.abs() * 2.0 ** -8 + 2.0 ** -133


class Int8(Quantizer):
    """Asymmetric 8-bit quantisation with a float32 zero point (the minimum) and scale per channel."""

    name = "int8"

    def nbytes(self, shape: tuple[int, ...], dim: int | None) -> int:
        return 8 * _groups(shape, dim) + math.prod(shape)

    @staticmethod
    def _stats(x: torch.Tensor, dim: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if dim is None:
            lo, hi = torch.aminmax(x)
            return lo.reshape([1] * x.dim()), hi.reshape([1] * x.dim())
        dims = [d for d in range(x.dim()) if d != dim]
        return x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)

    def encode(self, x: torch.Tensor, dim: int | None) -> torch.Tensor:
        lo, hi = self._stats(x, dim)
        scale = (hi - lo) / 255
        q = (x - lo).div_(torch.where(scale > 0, scale, torch.ones_like(scale))).round_().clamp_(0, 255)
        return torch.cat([lo.reshape(-1).view(torch.uint8), scale.reshape(-1).view(torch.uint8),
                          q.to(torch.uint8).reshape(-1)])

    def decode(self, buf: torch.Tensor, shape: tuple[int, ...], dim: int | None) -> torch.Tensor:
        c = _groups(shape, dim)
        lo, scale = buf[:4 * c].view(torch.float32), buf[4 * c:8 * c].view(torch.float32)
        if not bool(torch.isfinite(lo).all() & torch.isfinite(scale).all() & (scale >= 0).all()):
            raise _malformed(self.name, "a zero point or scale is negative, NaN or infinite")
        view = [1] * len(shape)
        if dim is not None:
            view[dim] = c
        q = buf[8 * c:].reshape(shape).float()
        return q.mul_(scale.reshape(view)).add_(lo.reshape(view))

    def bound(self, x: torch.Tensor, dim: int | None) -> torch.Tensor:
        lo, hi = self._stats(x, dim)
        return ((hi - lo) / 510 + 2.0 ** -20 * torch.maximum(lo.abs(), hi.abs())).expand_as(x)


class TopK:
    """Keeps the largest magnitudes of each sample; positions as a bitmask or int32 indices."""

    def __init__(self, fraction: float) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"codec 'topk:{fraction:g}' keeps a fraction of each sample's values; it must be "
                              "in (0, 1]", hint="write e.g. topk:0.1 to keep the largest 10%")
        self.fraction = fraction
        self.name = f"topk:{fraction:g}"

    def k(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(rows, values per row, values kept per row)."""
        n = math.prod(shape[1:])
        return shape[0], n, min(n, max(1, math.ceil(round(self.fraction * n, 9))))

    def _mask(self, shape: tuple[int, ...]) -> bool:
        rows, n, k = self.k(shape)
        return -(-n // 8) <= 4 * k

    def index_nbytes(self, shape: tuple[int, ...]) -> int:
        rows, n, k = self.k(shape)
        return _pad(rows * (-(-n // 8) if self._mask(shape) else 4 * k))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, n, k = self.k(tuple(x.shape))
        flat = x.reshape(rows, n)
        idx = flat.abs().topk(k, dim=1, sorted=False).indices.sort(dim=1).values
        values = flat.gather(1, idx)
        if self._mask(tuple(x.shape)):
            mask = torch.zeros(rows, -(-n // 8) * 8, dtype=torch.uint8)
            mask.scatter_(1, idx, 1)
            index = (mask.view(rows, -1, 8) * _BITS).sum(2, dtype=torch.uint8).reshape(-1)
        else:
            index = idx.to(torch.int32).reshape(-1).view(torch.uint8)
        out = torch.zeros(self.index_nbytes(tuple(x.shape)), dtype=torch.uint8)
        out[:index.numel()] = index
        return out, values

    def decode(self, index: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        rows, n, k = self.k(shape)
        if self._mask(shape):
            used = rows * -(-n // 8)
            bits = (index[:used].view(rows, -1, 1) & _BITS).ne(0).reshape(rows, -1)
            if bool(bits[:, n:].any()) or bool((bits[:, :n].sum(1) != k).any()):
                raise _malformed(self.name, f"a sample's bitmask does not mark exactly {k} of its {n} values")
            idx = bits[:, :n].nonzero()[:, 1].reshape(rows, k)
        else:
            used = rows * k * 4
            idx = index[:used].view(torch.int32).reshape(rows, k).long()
            if rows and k and (bool((idx < 0).any() | (idx >= n).any()) or bool((idx.diff(dim=1) <= 0).any())):
                raise _malformed(self.name, f"indices must rise strictly within 0..{n - 1} in every sample")
        if bool(index[used:].any()):
            raise _malformed(self.name, "its padding is not zero")
        return torch.zeros(rows, n).scatter_(1, idx, values).reshape(shape)

    def kept(self, x: torch.Tensor) -> torch.Tensor:
        """Which values this codec keeps (a boolean tensor of x's shape)."""
        rows, n, k = self.k(tuple(x.shape))
        flat = x.reshape(rows, n)
        idx = flat.abs().topk(k, dim=1, sorted=False).indices
        return torch.zeros(rows, n, dtype=torch.bool).scatter_(1, idx, True).reshape(x.shape)


class CodecChain:
    """An optional sparsifier followed by an optional quantizer; ``name`` is what both ends compare."""

    def __init__(self, sparsifier: TopK | None, quantizer: Quantizer | None) -> None:
        if sparsifier is None and quantizer is None:
            raise ConfigError("an empty codec chain", hint="name at least one codec, e.g. [int8]")
        self.sparsifier, self.quantizer = sparsifier, quantizer
        self.name = "+".join(c.name for c in (sparsifier, quantizer) if c is not None)

    def __repr__(self) -> str:
        return f"CodecChain({self.name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodecChain) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    @staticmethod
    def _dim(shape: tuple[int, ...]) -> int | None:
        return 1 if len(shape) >= 2 else None

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """The exact payload length for a tensor of ``shape``; any other length is refused."""
        if self.sparsifier is None:
            assert self.quantizer is not None
            return self.quantizer.nbytes(shape, self._dim(shape))
        rows, _, k = self.sparsifier.k(shape)
        values = self.quantizer.nbytes((rows, k), 0) if self.quantizer is not None else 4 * rows * k
        return self.sparsifier.index_nbytes(shape) + values

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """A float32 tensor of shape (batch, ...) as a uint8 payload of ``nbytes(x.shape)`` bytes."""
        x = x.detach().float()
        if self.sparsifier is None:
            assert self.quantizer is not None
            return self.quantizer.encode(x, self._dim(tuple(x.shape)))
        index, values = self.sparsifier.encode(x)
        if self.quantizer is None:
            return torch.cat([index, values.reshape(-1).view(torch.uint8)])
        return torch.cat([index, self.quantizer.encode(values, 0)])

    def decode(self, payload: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The float32 tensor a payload stands for; a payload of the wrong length or content is refused."""
        expect = self.nbytes(shape)
        if payload.dtype != torch.uint8 or payload.dim() != 1 or payload.numel() != expect:
            raise _malformed(self.name, f"{payload.numel()} bytes of {payload.dtype} for shape {shape}; "
                                        f"exactly {expect} uint8 bytes are expected")
        if self.sparsifier is None:
            assert self.quantizer is not None
            return self.quantizer.decode(payload, shape, self._dim(shape))
        rows, _, k = self.sparsifier.k(shape)
        cut = self.sparsifier.index_nbytes(shape)
        rest = payload[cut:]
        values = self.quantizer.decode(rest, (rows, k), 0) if self.quantizer is not None else \
            rest.view(torch.float32).reshape(rows, k)
        return self.sparsifier.decode(payload[:cut], values, shape)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """The stated elementwise error bound of a round trip of ``x``."""
        x = x.detach().float()
        if self.sparsifier is None:
            assert self.quantizer is not None
            return self.quantizer.bound(x, self._dim(tuple(x.shape)))
        kept = self.sparsifier.kept(x)
        if self.quantizer is None:
            return torch.where(kept, torch.zeros_like(x), x.abs())
        rows, _, k = self.sparsifier.k(tuple(x.shape))
        values = x.reshape(rows, -1)[kept.reshape(rows, -1)].reshape(rows, k)
        qb = torch.zeros(rows, x[0].numel())
        qb[kept.reshape(rows, -1)] = self.quantizer.bound(values, 0).reshape(-1)
        return torch.where(kept, qb.reshape(x.shape), x.abs())


@dataclass(frozen=True)
class CodecSpec:
    """A codec by name: what it does, and how to make one from its argument (``topk:0.1`` -> "0.1")."""

    name: str
    summary: str
    make: Callable[[str | None], TopK | Quantizer]
    sparsifier: bool = False


def _no_arg(name: str, make: Callable[[], Quantizer]) -> Callable[[str | None], Quantizer]:
    def build(arg: str | None) -> Quantizer:
        if arg is not None:
            raise ConfigError(f"codec '{name}' takes no argument, got '{name}:{arg}'", hint=f"write {name}")
        return make()
    return build


def _topk(arg: str | None) -> TopK:
    try:
        return TopK(float(arg))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"codec 'topk' needs the fraction of each sample's values to keep, got {arg!r}",
                          hint="write e.g. topk:0.1") from None


CODECS: dict[str, CodecSpec] = {spec.name: spec for spec in (
    CodecSpec("fp16", "half precision, 2 bytes a value (2x fewer bytes); values beyond +-65504 are refused",
              _no_arg("fp16", lambda: HalfFloat(torch.float16))),
    CodecSpec("bf16", "bfloat16, 2 bytes a value (2x fewer bytes); float32's range, 8 bits of precision",
              _no_arg("bf16", lambda: HalfFloat(torch.bfloat16))),
    CodecSpec("int8", "8 bits a value with a zero point and scale per channel (about 4x fewer bytes)",
              _no_arg("int8", Int8)),
    CodecSpec("topk", "topk:F keeps the largest fraction F of each sample's values, the rest arrive as 0; "
                      "put it before a quantizer (topk:0.1 then int8: about 18x fewer bytes)", _topk, True),
)}


def codec_chain(names: Sequence[str] | str) -> CodecChain:
    """A chain from codec names, e.g. ``["topk:0.1", "int8"]`` or ``"int8"``."""
    if isinstance(names, str):
        names = [names]
    sparsifier: TopK | None = None
    quantizer: Quantizer | None = None
    for text in names:
        name, _, arg = str(text).partition(":")
        if name not in CODECS:
            raise ConfigError(f"unknown codec '{name}'{did_you_mean(name, CODECS)}",
                              hint=f"codecs are: {', '.join(CODECS)}")
        step = CODECS[name].make(arg or None)
        if isinstance(step, TopK):
            if sparsifier is not None or quantizer is not None:
                raise ConfigError(f"codec chain {list(names)}: topk must come first, once",
                                  hint="a quantizer's bytes cannot be sparsified; write [topk:F, int8]")
            sparsifier = step
        else:
            if quantizer is not None:
                raise ConfigError(f"codec chain {list(names)} has two quantizers ({quantizer.name}, {step.name})",
                                  hint="choose one of fp16, bf16 and int8 per edge")
            quantizer = step
    return CodecChain(sparsifier, quantizer)


ChainSpec = Sequence[str] | Mapping[str, Sequence[str]]


def edge_codecs(spec: Mapping[str, ChainSpec], edges: Iterable[str]) -> dict[tuple[str, Kind], CodecChain]:
    """{(edge, kind): chain} from a topology's codec map.

    Keys are cut edge names or ``"*"`` (every cut edge; a named edge overrides it). A value is a chain for
    both directions (``[int8]``) or one per kind (``{activation: [int8], gradient: [fp16]}``).
    """
    edges = list(edges)
    out: dict[tuple[str, Kind], CodecChain] = {}
    for key in sorted(spec, key=lambda k: k != "*"):  # "*" first, so named edges override it
        if key != "*" and key not in edges:
            raise TopologyError(f"codecs are set for edge '{key}', which is not a cut edge of this topology"
                                f"{did_you_mean(key, edges)}", hint=f"cut edges are: {', '.join(edges) or 'none'}")
        value = spec[key]
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in [c.value for c in CUT_KINDS]]
            if unknown:
                raise ConfigError(f"codecs for edge '{key}' name {unknown}",
                                  hint="give a chain for 'activation' and/or 'gradient'")
            chains = {Kind(k): codec_chain(v) for k, v in value.items()}
        else:
            chain = codec_chain(value)
            chains = {k: chain for k in CUT_KINDS}
        for edge in edges if key == "*" else [key]:
            for kind, chain in chains.items():
                out[(edge, kind)] = chain
    return out
