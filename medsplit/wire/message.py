"""Typed messages at the cut: what a tensor on the wire is, and what a receiver expects."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

__all__ = ["Kind", "Message", "Expect", "Packed", "PHASES"]


class Kind(str, enum.Enum):
    """What a tensor on the wire is; a site administrator's audit is grouped by it."""

    ACTIVATION = "activation"
    GRADIENT = "gradient"
    LABEL = "label"
    WEIGHTS = "weights"
    FINGERPRINT = "fingerprint"  # keyed hash of a batch's row IDs (vertical sites), 32 bytes
    PSI = "psi"  # private set intersection messages (opaque bytes), before training
    PREDICTION = "prediction"  # a head's outputs, sent to the site that owns the task's labels (predict only)


#: when a message is sent: a training step, an evaluation batch, a weight sync, patient alignment (PSI), or
#: a forward pass for predictions. Append only: the wire header carries a phase as its index here.
PHASES: tuple[str, ...] = ("train", "eval", "sync", "align", "predict")


@dataclass(frozen=True)
class Packed:
    """An encoded message's tensor: the codec chain that made the bytes, and the tensor they stand for."""

    codec: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class Message:
    """One tensor in flight, with the header that lets the receiver match it to what it expects.

    ``micro`` numbers the micro-batches of a pipelined step (0 otherwise). With ``packed`` the tensor is
    the uint8 payload a codec made, and ``packed`` says which codec and what tensor it stands for.
    """

    step: int
    edge: str
    kind: Kind
    src: str
    dst: str
    tensor: torch.Tensor
    phase: str = "train"
    micro: int = 0
    packed: Packed | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the tensor the message stands for (decoded, when it is encoded)."""
        return self.packed.shape if self.packed is not None else tuple(self.tensor.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.packed.dtype if self.packed is not None else self.tensor.dtype

    def describe(self) -> str:
        micro = f" (micro-batch {self.micro})" if self.micro else ""
        codec = f", encoded with {self.packed.codec} in {self.tensor.numel()} bytes" if self.packed else ""
        return (f"{self.kind.value} on edge '{self.edge}' from '{self.src}' to '{self.dst}' at step {self.step}"
                f"{micro} with shape {self.shape} and dtype {self.dtype}{codec}")


@dataclass(frozen=True)
class Expect:
    """What a party is about to receive. ``shape`` is per sample unless ``exact`` (gradients are exact).

    ``shape=None`` accepts any one-dimensional tensor (opaque byte messages such as PSI).
    """

    step: int
    edge: str
    kind: Kind
    src: str
    dst: str
    shape: tuple[int, ...] | None
    dtype: torch.dtype
    exact: bool = False
    phase: str = "train"
    micro: int = 0

    def describe(self) -> str:
        what = "shape" if self.exact else "per-sample shape"
        shape = f"{what} {self.shape}" if self.shape is not None else "one-dimensional"
        micro = f" (micro-batch {self.micro})" if self.micro else ""
        return (f"{self.kind.value} on edge '{self.edge}' from '{self.src}' at step {self.step}{micro} "
                f"({shape}, {self.dtype})")
