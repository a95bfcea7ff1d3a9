"""In-process transport: one FIFO queue per (src, dst) pair, for simulation and tests."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import TransportError
from .base import Transport, wait_on_mailbox

if TYPE_CHECKING:
    from ..wire.message import Message

__all__ = ["LocalTransport"]

_POLL = 0.05  # seconds between checks for a closed transport while waiting


class LocalTransport(Transport):
    """All parties in one process. Tensors are cloned on send so no party shares memory with another.

    ``copy_on_send=False`` hands the sent tensor over instead, for a sender that never edits a tensor
    after sending it (the engine: ``in_process_transport``). The Wire has detached it already, so the
    receiver never reaches into the sender's autograd graph; an in-place edit of it by the receiver would
    fail the sender's backward (autograd's version check) rather than pass silently.
    """

    name = "local"

    def __init__(self, *, copy_on_send: bool = True) -> None:
        self.copy_on_send = copy_on_send
        self._queues: dict[tuple[str, str], queue.Queue[Message]] = defaultdict(queue.Queue)
        self._lock = threading.Lock()
        self._closed: str | None = None

    def _queue(self, src: str, dst: str) -> queue.Queue[Message]:
        with self._lock:
            return self._queues[(src, dst)]

    def send(self, msg: Message) -> None:
        if self._closed is not None:
            raise TransportError(f"cannot send {msg.describe()}: transport closed ({self._closed})")
        # By default a clone, as a real wire would copy: the receiver must never alias the sender's memory.
        tensor = msg.tensor.detach()
        self._queue(msg.src, msg.dst).put(replace(msg, tensor=tensor.clone() if self.copy_on_send else tensor))

    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message:
        return wait_on_mailbox(self._queue(src, dst), timeout=timeout, closed=lambda: self._closed, src=src, dst=dst,
                               awaiting=awaiting, poll=_POLL)

    def pending(self) -> int:
        """Messages sent but not received; a finished step leaves none."""
        with self._lock:
            return sum(q.qsize() for q in self._queues.values())

    def close(self, reason: str | None = None) -> None:
        self._closed = reason or "closed"
