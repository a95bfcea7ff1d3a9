"""What the attackers see: every gradient a party receives during training, and the rows of every step.

``Tap`` wraps any transport (the injected seam) and keeps a copy of each training gradient as its receiver
gets it; ``watch_rows`` records which rows each site used in each unit. Together they let the card pair a
received gradient with the labels of the patients it came from: ground truth the attacker does not have,
used only to score the attack.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from ..engine.trainer import SplitTrainer
from ..plan.schedule import UnitSpec
from ..transport.base import Transport
from ..wire.message import Kind, Message

__all__ = ["Tap", "watch_rows"]


class Tap(Transport):
    """A transport that delivers through ``inner`` and keeps {(receiver, edge): [(step, gradient)]} of training."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = f"tap({inner.name})"
        self.gradients: dict[tuple[str, str], list[tuple[int, torch.Tensor]]] = defaultdict(list)

    def send(self, msg: Message) -> None:
        self.inner.send(msg)

    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message:
        msg = self.inner.recv(src, dst, timeout=timeout, awaiting=awaiting)
        if msg.kind is Kind.GRADIENT and msg.phase == "train":
            self.gradients[(dst, msg.edge)].append((msg.step, msg.tensor.detach().clone()))
        return msg

    def close(self, reason: str | None = None) -> None:
        self.inner.close(reason)


def watch_rows(trainer: SplitTrainer) -> dict[int, dict[str, Sequence[int]]]:
    """{step: {site: rows}} of every unit the trainer runs from now on (the loop's executor, wrapped)."""
    rows: dict[int, dict[str, Sequence[int]]] = {}
    execute = trainer.loop.execute

    def recording(specs: list[UnitSpec]) -> None:
        for spec in specs:
            rows[spec.step] = {site: list(idx) for site, idx in spec.rows.items()}
        execute(specs)

    trainer.loop.execute = recording
    return rows
