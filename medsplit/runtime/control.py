"""The control plane: short JSON values beside the tensor channels (session, handshake, rows, reports).

Values live in the rendezvous store the host serves, under keys scoped to the run; they are parsed with
``json``, never unpickled. It is a rendezvous, not a secure channel (docs/security.md says what it exposes).
Every wait is bounded and can be cut short by an ``abort`` check that names why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..errors import PeerTimeout, TransportError
from ..transport.base import NetworkTransport

__all__ = ["ControlPlane", "Abort"]

_POLL = 0.05
#: returns why a wait should stop (the run moved on), or None to keep waiting
Abort = Callable[[], str | None]


class ControlPlane:
    """Run-scoped JSON values in the store of ``transport`` (which follows the host across restarts)."""

    def __init__(self, transport: NetworkTransport, run_id: str) -> None:
        self.transport = transport
        self.run_id = run_id

    def _key(self, parts: tuple[Any, ...]) -> str:
        return "ctl/" + "/".join([self.run_id, *map(str, parts)])

    def set(self, value: Any, *key: Any) -> None:
        self.transport.store.set(self._key(key), json.dumps(value))

    def get(self, *key: Any) -> Any | None:
        """The value at ``key``, or None when it is not set; a store that cannot be reached raises."""
        k = self._key(key)
        try:
            if not self.transport.store.check([k]):
                return None
            return json.loads(self.transport.store.get(k))
        except (RuntimeError, OSError) as exc:  # c10d raises these for a store whose host has gone
            raise TransportError(f"the rendezvous store cannot be reached: {str(exc).strip()[:200]}",
                                 hint="the server stopped or restarted; it is reached again when it is back") from exc

    def wait(self, timeout: float, awaiting: str, *key: Any, abort: Abort | None = None) -> Any:
        """Wait (at most ``timeout`` seconds) for ``key`` and return its value; ``abort`` can end the wait."""
        return self.wait_first(timeout, awaiting, [key], abort=abort)[1]

    def wait_first(self, timeout: float, awaiting: str, keys: list[tuple[Any, ...]], *,
                   abort: Abort | None = None) -> tuple[int, Any]:
        """Wait for whichever of ``keys`` is set first: (its index, its value)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, key in enumerate(keys):
                value = self.get(*key)
                if value is not None:
                    return i, value
            reason = abort() if abort is not None else None
            if reason:
                raise TransportError(f"stopped waiting for {awaiting}: {reason}")
            if time.monotonic() > deadline:
                raise PeerTimeout(f"waited {timeout:.0f} s for {awaiting} and nothing came",
                                  hint="check that the other party is running and can reach the server")
            time.sleep(_POLL)
