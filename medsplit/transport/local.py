"""In-process transport: one FIFO queue per (src, dst) pair, for simulation and tests."""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from ..errors import PeerTimeout, TransportError
from .base import Transport

if TYPE_CHECKING:
    from ..wire import Message

__all__ = ["LocalTransport"]

_POLL = 0.05  # seconds between checks for a closed transport while waiting


class LocalTransport(Transport):
    """All parties in one process. Tensors are cloned on send so no party shares memory with another."""

    name = "local"

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], queue.Queue] = defaultdict(queue.Queue)
        self._lock = threading.Lock()
        self._closed: str | None = None

    def _queue(self, src: str, dst: str) -> queue.Queue:
        with self._lock:
            return self._queues[(src, dst)]

    def send(self, msg: Message) -> None:
        if self._closed is not None:
            raise TransportError(f"cannot send {msg.describe()}: transport closed ({self._closed})")
        # A clone, as a real wire would copy: the receiver must never alias the sender's autograd graph.
        self._queue(msg.src, msg.dst).put(
            type(msg)(msg.step, msg.edge, msg.kind, msg.src, msg.dst, msg.tensor.detach().clone(), msg.phase))

    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message:
        q = self._queue(src, dst)
        deadline = time.monotonic() + timeout
        while True:
            if self._closed is not None:
                raise TransportError(f"party '{dst}' stopped waiting for {awaiting}: {self._closed}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerTimeout(f"party '{dst}' waited {timeout:.0f} s for {awaiting} and nothing came",
                                  hint=f"check that party '{src}' is running and did not fail")
            try:
                return q.get(timeout=min(_POLL, left))
            except queue.Empty:
                continue

    def pending(self) -> int:
        """Messages sent but not received; a finished step leaves none."""
        with self._lock:
            return sum(q.qsize() for q in self._queues.values())

    def close(self, reason: str | None = None) -> None:
        self._closed = reason or "closed"
