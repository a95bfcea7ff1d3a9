"""MockTransport: a transport whose deliveries a test controls, to inject wrong or missing messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .local import LocalTransport

if TYPE_CHECKING:
    from ..wire.message import Message

__all__ = ["MockTransport"]


class MockTransport(LocalTransport):
    """Passes each sent message through ``handler``, which returns the message to deliver or None to drop it.

    Example: ``MockTransport(lambda m: replace(m, step=m.step + 1) if m.kind is Kind.GRADIENT else m)``.
    """

    name = "mock"

    def __init__(self, handler: Callable[[Message], Message | None]) -> None:
        super().__init__()
        self.handler = handler
        self.seen: list[Message] = []

    def send(self, msg: Message) -> None:
        self.seen.append(msg)
        out = self.handler(msg)
        if out is not None:
            super().send(out)
