"""The control plane: a small key-value store beside the tensor transport (rendezvous, auth, status, metrics).

Values are short JSON or hex strings, parsed with ``json`` — never unpickled. The server hosts it (a
torch.distributed TCPStore); nodes in one process share a ``LocalControl``. It is a rendezvous, not a
secure channel: run it inside a VPN or tunnel between institutions (docs/deployment.md).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Protocol

from .errors import PeerTimeout

__all__ = ["Control", "LocalControl", "StoreControl", "wait_json"]

_POLL = 0.05


class Control(Protocol):
    def set(self, key: str, value: str) -> None: ...

    def get(self, key: str) -> str | None: ...

    def add(self, key: str, amount: int) -> int: ...


def wait_json(control: Control, key: str, timeout: float, awaiting: str, abort=None) -> Any:
    """Wait (bounded) for ``key`` and return its JSON value; ``abort()`` returning a reason stops the wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = control.get(key)
        if value is not None:
            return json.loads(value)
        if abort is not None:
            reason = abort()
            if reason:
                raise PeerTimeout(f"stopped waiting for {awaiting}: {reason}")
        if time.monotonic() > deadline:
            raise PeerTimeout(f"waited {timeout:.0f} s for {awaiting} and nothing came",
                              hint="check that the other party is running and can reach the server")
        time.sleep(_POLL)


class LocalControl:
    """Nodes in one process (threads): a dict under a lock."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._data.get(key)

    def add(self, key: str, amount: int) -> int:
        with self._lock:
            value = int(self._data.get(key, "0")) + amount
            self._data[key] = str(value)
            return value


class StoreControl:
    """Over a torch.distributed TCPStore (hosted by the server, reached by every node)."""

    def __init__(self, store) -> None:
        self.store = store

    def set(self, key: str, value: str) -> None:
        self.store.set(f"ctl/{key}", value)

    def get(self, key: str) -> str | None:
        k = f"ctl/{key}"
        if not self.store.check([k]):
            return None
        return self.store.get(k).decode()

    def add(self, key: str, amount: int) -> int:
        return int(self.store.add(f"ctl/{key}", amount))
