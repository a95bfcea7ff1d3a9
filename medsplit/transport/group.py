"""PartyGroup: several parties of one process, each talking through its own end of a transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import TransportError
from .base import Transport

if TYPE_CHECKING:
    from ..wire.message import Message

__all__ = ["PartyGroup"]


class PartyGroup(Transport):
    """Routes each send through the sender's end and each receive through the receiver's."""

    def __init__(self, ends: Mapping[str, Transport], name: str) -> None:
        self.ends = dict(ends)
        self.name = name

    def _end(self, party: str) -> Transport:
        if party not in self.ends:
            raise TransportError(f"party '{party}' has no end of this {self.name} transport",
                                 hint=f"its parties are: {', '.join(self.ends)}")
        return self.ends[party]

    def send(self, msg: Message) -> None:
        self._end(msg.src).send(msg)

    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message:
        return self._end(dst).recv(src, dst, timeout=timeout, awaiting=awaiting)

    def close(self, reason: str | None = None) -> None:
        for end in self.ends.values():
            end.close(reason)
