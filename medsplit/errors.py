"""Every error medsplit raises, in one tree.

    MedsplitError                 base class; ``str(err)`` says what, where and how to fix it
    ├── ConfigError               a config file, key or CLI value is wrong (names file, key, fix)
    ├── TopologyError             the graph of segments cannot be trained (cycle, unknown party, ...)
    ├── DataError                 a site's data cannot be read or is unusable (names path, reason)
    ├── ProtocolError             a peer sent something the plan does not expect (names party, edge, step)
    │   └── PrivacyError          a party tried to send what the topology does not declare
    ├── TransportError            a message could not be delivered
    │   └── PeerTimeout           a wait ran out; names the peer and what was awaited
    ├── AuthenticationError       a peer could not prove who it is, or this party refused it
    │   └── RefusedError          a peer that proved who it is refused this party (for good: fix, restart)
    └── RunError                  a run could not complete (a party failed for good, retries ran out)
"""

from __future__ import annotations

__all__ = [
    "MedsplitError",
    "ConfigError",
    "TopologyError",
    "DataError",
    "ProtocolError",
    "PrivacyError",
    "TransportError",
    "PeerTimeout",
    "AuthenticationError",
    "RefusedError",
    "RunError",
]


class MedsplitError(Exception):
    """Base class. ``hint`` is the fix, appended to the message so that logs carry it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  fix: {hint}")


class ConfigError(MedsplitError):
    """A configuration value is wrong; the message names the file (if any), the key and the fix."""


class TopologyError(MedsplitError):
    """A topology is refused before training; the message names the segment, party or edge."""


class DataError(MedsplitError):
    """A site's data cannot be used; the message names the path or column and the reason."""


class ProtocolError(MedsplitError):
    """A received message does not match what the plan expects at this party, edge and step."""


class PrivacyError(ProtocolError):
    """A party tried to send a tensor that the topology does not declare for that edge."""


class TransportError(MedsplitError):
    """A message could not be sent or received."""


class PeerTimeout(TransportError):
    """A bounded wait for a peer ran out."""


class AuthenticationError(MedsplitError):
    """A peer could not prove it is the party it claims (or this party refused it); no tensor moved.

    The attempt failed, not the run: an impostor, a wrong secret and a peer that left mid-handshake look alike
    from here, so an honest party tries again.
    """


class RefusedError(AuthenticationError):
    """A peer that proved who it is refused this party (another experiment, credentials it does not accept).

    Trying again does not help: the operator must fix this party's experiment file or credentials.
    """


class RunError(MedsplitError):
    """A run could not complete: a party exited with an error, or it failed again after every retry."""
