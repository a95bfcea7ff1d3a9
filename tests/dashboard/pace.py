"""A study's own encoder for the dashboard's browser walk (`encoder: {kind: module, module:
tests.dashboard.pace:encoder}`): a small MLP that takes PACE seconds per batch, so that a tiny run lasts long
enough to be watched step by step, stopped and resumed, however fast the machine."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from torch import Tensor, nn

PACE = 0.12  # seconds per forward pass


class Paced(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(PACE)
        return self.inner(x)


def encoder(shape: Sequence[int], out: int) -> nn.Module:
    return Paced(nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), out), nn.ReLU()))
