"""The control plane: short JSON values between the host and each party, on their authenticated connections.

Values (session, checkpoints, start, pair keys, rows, losses, epoch reports, done) are posted on the sealed
pair to one peer and land in that pair's inbox, so only the two ends can read or write them, and a new
connection starts empty. The rendezvous store is public: it carries only two hints, a member's knock ("I am
here") and the host's invitation ("connect now"), which can at worst make a party try a connection that
then fails its handshake. Every wait is bounded and can be cut short by an ``abort`` check that names why.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..errors import PeerTimeout, TransportError
from ..transport.base import NetworkTransport

__all__ = ["ControlPlane", "Abort"]

#: returns why a wait should stop (the run moved on), or None to keep waiting
Abort = Callable[[], str | None]


def _key(parts: tuple[Any, ...]) -> str:
    return "/".join(map(str, parts))


class ControlPlane:
    """This party's control values to and from its peers over ``transport``; hints in its public store."""

    def __init__(self, transport: NetworkTransport, run_id: str, me: str) -> None:
        self.transport = transport
        self.run_id = run_id
        self.me = me

    # --- values, on the authenticated connections ----------------------------------------------------

    def send(self, peer: str, value: Any, *key: Any) -> None:
        self.transport.post(peer, _key(key), value)

    def get(self, peer: str, *key: Any) -> Any | None:
        """The latest value ``peer`` sent under ``key`` on the current connection, or None."""
        try:
            return self.transport.inbox(peer).get(_key(key))
        except TransportError:  # not connected to it (any more)
            return None

    def wait(self, peer: str, timeout: float, awaiting: str, *key: Any, abort: Abort | None = None) -> Any:
        """Wait (at most ``timeout`` s) for ``peer``'s value at ``key``; a lost connection or ``abort`` ends it."""
        return self.transport.inbox(peer).wait(_key(key), timeout, awaiting, abort)

    # --- hints, in the public store ------------------------------------------------------------------

    def _hint(self, *parts: str) -> str:
        return "ctl/" + "/".join([self.run_id, *parts])

    def _read(self, key: str) -> str | None:
        store = self.transport.store
        try:
            if not store.check([key]):
                return None
            value = json.loads(store.get(key))
        except (RuntimeError, OSError) as exc:  # c10d raises these for a store whose host has gone
            raise TransportError(f"the rendezvous store cannot be reached: {str(exc).strip()[:200]}",
                                 hint="the server stopped or restarted; it is reached again when it is back") from exc
        except ValueError:
            return None  # not ours: anyone can write the store
        return value if isinstance(value, str) and len(value) <= 64 else None

    def _write(self, key: str, value: str) -> None:
        try:
            self.transport.store.set(key, json.dumps(value))
        except (RuntimeError, OSError) as exc:
            raise TransportError(f"the rendezvous store cannot be reached: {str(exc).strip()[:200]}") from exc

    def knock(self) -> str:
        """A member says it is here and wants to join; returns the token the host's invitation will carry."""
        token = secrets.token_hex(8)
        self._write(self._hint("knock", self.me), token)
        return token

    def knocked(self, party: str) -> str | None:
        return self._read(self._hint("knock", party))

    def invite(self, party: str, token: str) -> None:
        """The host answers ``party``'s knock: it is connecting to it now."""
        self._write(self._hint("invite", party), token)

    def wait_invited(self, token: str, timeout: float) -> None:
        """A member waits for the host to answer its knock (the host does so at a session's start)."""
        deadline = time.monotonic() + timeout
        while self._read(self._hint("invite", self.me)) != token:
            if time.monotonic() > deadline:
                raise PeerTimeout(f"party '{self.me}' knocked and the server did not invite it within {timeout:.0f} s",
                                  hint="the server takes a party in when a session starts (at an epoch's end)")
            time.sleep(0.1)
