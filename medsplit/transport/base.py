"""The Transport interface: a dumb, ordered pipe per pair of parties. Checking and metering live in Wire."""

from __future__ import annotations

import abc
import queue
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ..errors import PeerTimeout, TransportError

if TYPE_CHECKING:
    from ..wire.message import Message
    from .inbox import ControlInbox

__all__ = ["Transport", "NetworkTransport", "Store", "wait_on_mailbox"]


class Transport(abc.ABC):
    """Delivers messages between parties, in order per (src, dst) pair.

    Implementations: ``LocalTransport`` (in-process), ``MockTransport`` (tests); between processes,
    ``NetworkTransport``s: ``GlooTransport`` and ``RpcTransport``.
    ``send`` must not block until the receiver is ready (the engine's schedule relies on it).
    ``recv`` blocks at most ``timeout`` seconds and then raises ``PeerTimeout`` naming ``awaiting``.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def send(self, msg: Message) -> None: ...

    @abc.abstractmethod
    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message: ...

    def close(self, reason: str | None = None) -> None:  # noqa: B027 - optional: most transports hold nothing
        """Release resources; a reason wakes every waiting ``recv`` with a TransportError."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(Protocol):
    """The rendezvous key-value store a network transport meets in (a torch.distributed store)."""

    def set(self, key: str, value: str | bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def check(self, keys: list[str]) -> bool: ...


class NetworkTransport(Transport):
    """A transport between processes: what a node needs beyond send and receive.

    Parties meet in a rendezvous ``store`` hosted by one of them (on ``port``); ``connect`` builds the
    connections to peers, ``reconnect`` replaces one that was lost (when ``rejoin`` is true: a peer that
    restarted can come back alone), ``drop`` closes one, ``flush`` waits until every send was delivered, and
    ``connected`` lists the peers whose connection is up. ``post`` sends a control-plane value (JSON) to a
    peer on their connection; ``inbox(peer)`` holds the values received from it on the current connection.
    The store is public: it may carry hints and rendezvous data, never what a party acts on unchecked.
    """

    rejoin: ClassVar[bool] = False
    port: int

    @property
    @abc.abstractmethod
    def store(self) -> Store: ...

    @abc.abstractmethod
    def connect(self, peers: Iterable[str] | None = None, *, timeout: float | None = None) -> None: ...

    @abc.abstractmethod
    def reconnect(self, peer: str, *, timeout: float | None = None) -> int: ...

    @abc.abstractmethod
    def flush(self, timeout: float | None = None) -> None: ...

    @abc.abstractmethod
    def drop(self, peer: str, reason: str) -> None: ...

    @abc.abstractmethod
    def post(self, peer: str, key: str, value: Any) -> None: ...

    @abc.abstractmethod
    def inbox(self, peer: str) -> ControlInbox: ...

    def refresh_store(self) -> None:
        """Reaches the host's store again after it restarted (transports whose parties can rejoin)."""

    @property
    @abc.abstractmethod
    def connected(self) -> list[str]: ...


_Item = TypeVar("_Item")


def wait_on_mailbox(mailbox: queue.Queue[_Item], *, timeout: float, closed: Callable[[], str | None], src: str,
                    dst: str, awaiting: str, via: str = "", poll: float = 0.1) -> _Item:
    """The next item of a receive mailbox, waiting at most ``timeout``; every transport's ``recv`` waits here.

    ``closed()`` is checked every ``poll`` seconds, so that closing a transport wakes its waiting receivers.
    ``via`` adds how the peer was reached to the timeout's message (" from 'x' over gloo (generation 2)").
    """
    deadline = time.monotonic() + timeout
    while True:
        reason = closed()
        if reason is not None:
            raise TransportError(f"party '{dst}' stopped waiting for {awaiting}: {reason}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerTimeout(f"party '{dst}' waited {timeout:.0f} s for {awaiting}{via} and nothing came",
                              hint=f"check that party '{src}' is running and did not fail")
        try:
            return mailbox.get(timeout=min(poll, left))
        except queue.Empty:
            continue
