"""Control-plane values received on one connection: the latest value per key, parsed as strict JSON."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import PeerTimeout, ProtocolError, TransportError

__all__ = ["ControlInbox", "encode_control", "decode_control", "MAX_KEYS"]

MAX_KEYS = 4096  # distinct keys one connection may fill (a session uses a few per epoch)


def encode_control(key: str, value: Any) -> bytes:
    return json.dumps({"k": key, "v": value}, separators=(",", ":"), allow_nan=False).encode()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_control(data: bytes, peer: str) -> tuple[str, Any]:
    """(key, value) of a control value from ``peer``; anything else is a ProtocolError (JSON only, never pickle)."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"peer '{peer}' sent a control value that is not JSON: {str(exc)[:100]}",
                            hint="the peer runs an incompatible or faulty medsplit") from None
    if not isinstance(obj, dict) or set(obj) != {"k", "v"} or not isinstance(obj["k"], str) or len(obj["k"]) > 200:
        raise ProtocolError(f"peer '{peer}' sent a control value without a key",
                            hint="the peer runs an incompatible or faulty medsplit")
    return obj["k"], obj["v"]


class ControlInbox:
    """Values from one peer on one connection; a new connection starts with an empty inbox."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._values: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._ended: str | None = None

    def put(self, key: str, value: Any) -> None:
        with self._cond:
            if key not in self._values and len(self._values) >= MAX_KEYS:
                raise ProtocolError(f"peer '{self.peer}' sent more than {MAX_KEYS} distinct control keys")
            self._values[key] = value
            self._cond.notify_all()

    def end(self, why: str) -> None:
        """The connection is gone: waiting for a value that has not come fails with ``why``."""
        with self._cond:
            self._ended = why
            self._cond.notify_all()

    def get(self, key: str) -> Any | None:
        with self._cond:
            return self._values.get(key)

    def wait(self, key: str, timeout: float, awaiting: str, abort: Callable[[], str | None] | None = None) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self._values:
                if self._ended is not None:
                    raise TransportError(f"stopped waiting for {awaiting}: {self._ended}")
                reason = abort() if abort is not None else None
                if reason:
                    raise TransportError(f"stopped waiting for {awaiting}: {reason}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerTimeout(f"waited {timeout:.0f} s for {awaiting} from '{self.peer}' and nothing came",
                                      hint=f"check that party '{self.peer}' is running")
                self._cond.wait(min(left, 0.1))
            return self._values[key]
