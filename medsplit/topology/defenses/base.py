"""What a privacy defense at the cut is: a piece the party runner calls at three moments, each a no-op by default.

Defenses compose per segment (``Segment.defenses``, applied in order) and segment code never sees them, like
Flower's client mods. Two places exist, and a defense says which it belongs to (``protects``):

- ``"inputs"``: on a site segment whose output leaves the site (a cut). ``activation`` changes what is sent
  (noise, clipping); ``cut_gradient`` changes the gradient the site trains its part with (NoPeek adds the
  gradient of dCor(raw input, cut)); ``loss`` adds a term to the site's loss (a user's own defense).
- ``"labels"``: on a segment at the site that owns a task's labels and whose input comes from another party
  (a U-shaped tail). ``label_gradient`` changes the gradient sent back across the cut, from which the other
  party could otherwise read the labels (Li et al., 2021).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

__all__ = ["CutDefense", "PROTECTS"]

PROTECTS = ("inputs", "labels")


class CutDefense:
    """Base class of the defenses at a cut; override the hooks a defense needs."""

    name: ClassVar[str] = "defense"
    protects: ClassVar[Literal["inputs", "labels"]] = "inputs"

    def activation(self, cut: torch.Tensor, *, train: bool) -> torch.Tensor:
        """The tensor sent in place of the segment's output ``cut`` (training and evaluation alike)."""
        return cut

    def cut_gradient(self, raw: torch.Tensor | None, cut: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The gradient the site backpropagates through its segment, given the one that came back (``grad``).

        ``raw`` is the site's raw input behind the cut, one flattened row per sample (None on a segment that
        reads no data of its own).
        """
        return grad

    def loss(self, raw: torch.Tensor, cut: torch.Tensor) -> torch.Tensor | None:
        """A term added to the site's loss (None: nothing)."""
        return None

    def label_gradient(self, grad: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The gradient sent back across the cut in place of ``grad``; ``labels`` are the batch's labels."""
        return grad

    def describe(self) -> str:
        """A short name with the strength, as the report card lists it (``noise(sigma=0.5)``)."""
        return self.name
