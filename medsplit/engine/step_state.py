"""What one step leaves at a party (``StepState``), and the optimizer a party uses unless told otherwise."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ProtocolError
from .units import Batch

__all__ = ["StepState", "OptimizerFactory", "default_optimizer", "joined"]


OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


@dataclass
class StepState:
    """Everything one step leaves at a party; dropped when the party updates, so steps never mix.

    A pipelined step keeps one per micro-batch: micro-batch 0's holds those of 1, 2, ... in ``micros``.
    """

    batch: Batch = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    raw: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    leaves: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    received: dict[str, torch.Tensor] = field(default_factory=dict)
    out_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    losses: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: int | None = None
    batch_rows: int = 0  # a pipelined step's rows (a micro-batch's loss counts for its share of them); else 0
    micros: list[StepState] = field(default_factory=list)

    def check_rows(self, party: str, step: int, rows: int, what: str) -> None:
        """Every tensor of a step has the step's rows: the first one fixes them."""
        if self.rows is None:
            self.rows = rows
        elif self.rows != rows:
            raise ProtocolError(f"party '{party}' at step {step}: {what} has {rows} rows, but this step "
                                f"has {self.rows}", hint="the sites' batches are not aligned on the same patients")


def joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
