"""The Transport interface: a dumb, ordered pipe per pair of parties. Checking and metering live in Wire."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..wire import Message

__all__ = ["Transport"]


class Transport(abc.ABC):
    """Delivers messages between parties, in order per (src, dst) pair.

    Implementations: ``LocalTransport`` (in-process), ``MockTransport`` (tests); later gloo and rpc.
    ``send`` must not block until the receiver is ready (the engine's schedule relies on it).
    ``recv`` blocks at most ``timeout`` seconds and then raises ``PeerTimeout`` naming ``awaiting``.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def send(self, msg: Message) -> None: ...

    @abc.abstractmethod
    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message: ...

    def close(self, reason: str | None = None) -> None:
        """Release resources; a reason wakes every waiting ``recv`` with a TransportError."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
