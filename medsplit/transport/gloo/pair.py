"""One connection of a GlooTransport: a 2-rank gloo group, its sealed channel, and its receiver and completer threads.

Every frame is sealed (``secure/channel.py``): a fixed-size sealed header, then the sealed payload bound to
that header. The receiver thread opens each header before it parses it, checks the peer's quota before it
allocates the payload, and opens the payload before anything reads it; data goes to the mailbox, control
values to the inbox. A frame that does not verify, a goodbye, or a lost socket ends the pair (``Lost``), and
the next receive from that peer says why.
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
from typing import Any

import torch
from torch.distributed import ProcessGroupGloo

from ...errors import ProtocolError
from ...wire.message import Message
from ..header import (
    BYE,
    CONTROL,
    HEADER_LEN,
    MAX_REASON_BYTES,
    Header,
    NameTable,
    bye_header,
    control_header,
    decode,
    encode,
)
from ..inbox import ControlInbox, decode_control
from ..secure import TAG, Channel

__all__ = ["Pair", "Lost", "receive_loop", "complete_loop", "to_bytes", "from_bytes", "first_line", "td", "FOREVER",
           "Limits", "TAG_HANDSHAKE"]

_TAG_HEADER, _TAG_PAYLOAD, TAG_HANDSHAKE = 1, 2, 3
_SEALED_HEADER = HEADER_LEN * 8 + TAG
_HEADER, _PAYLOAD = b"H", b"P"  # what a sealed frame is, in its associated data
# A receive posted by the receiver thread waits this long; gloo closes the pair when it runs out, so it is
# "forever" for a training run (11.6 days idle on one pair) while staying far from clock overflow.
FOREVER = datetime.timedelta(seconds=1_000_000)
_MESSAGE_COST = 256  # bytes a queued message counts for beyond its payload, so that empty ones are not free


def td(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=max(seconds, 0.001))


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class Limits:
    """What one peer may make this party hold: one payload's bytes, and bytes and messages not yet taken."""

    def __init__(self, max_bytes: int, max_queued_bytes: int, max_queued: int = 4096,
                 max_control_bytes: int = 256 << 20) -> None:
        self.max_bytes, self.max_queued_bytes, self.max_queued = max_bytes, max_queued_bytes, max_queued
        self.max_control_bytes = max_control_bytes


class Lost:
    """Why a pair's connection ended: a lost socket, a goodbye, or a frame that could not be trusted."""

    def __init__(self, cause: str, *, bye: bool = False, error: ProtocolError | None = None) -> None:
        self.cause, self.bye, self.error = cause, bye, error


class Pair:
    """One generation of the connection to one peer: its group, channel, mailbox, inbox, send queue, threads."""

    def __init__(self, peer: str, rank: int, generation: int, pg: ProcessGroupGloo, channel: Channel) -> None:
        self.peer = peer
        self.peer_rank = 1 - rank
        self.generation = generation
        self.pg = pg
        self.channel = channel
        self.mailbox: queue.Queue[Message | Lost] = queue.Queue()
        self.inbox = ControlInbox(peer)
        # (work, tensor, what) for the completer; None ends it
        self.sends: queue.Queue[tuple[Any, torch.Tensor, str] | None] = queue.Queue()
        self.unfinished = 0
        self.done = threading.Condition()  # notified whenever a send completes or the connection is lost
        self.lock = threading.Lock()  # keeps one message's frames together and in counter order
        self.queued_bytes = 0  # received data not yet taken by recv (with _MESSAGE_COST each)
        self.queued = 0
        self.control_bytes = 0
        self.lost: Lost | None = None
        self.retired = False
        self.said_bye = False
        self.threads: list[threading.Thread] = []

    def post(self, header: torch.Tensor, payload: torch.Tensor, what: str) -> None:
        """Seals and posts one message (header, then payload bound to it); call with ``lock`` held."""
        plain = header.numpy().tobytes()
        frames = (self.channel.seal(_HEADER, header.view(torch.uint8)),
                  self.channel.seal(_PAYLOAD, payload, extra=plain))
        for tag, tensor in zip((_TAG_HEADER, _TAG_PAYLOAD), frames, strict=True):
            work = self.pg.send([tensor], self.peer_rank, tag)  # type: ignore[attr-defined]  # untyped in torch
            with self.done:
                self.unfinished += 1
            self.sends.put((work, tensor, what))

    def say_bye(self, me: str, names: NameTable, reason: str) -> None:
        """Posts this end's goodbye, once (a goodbye answers a goodbye, so both ends' threads return)."""
        text = reason.encode()[:MAX_REASON_BYTES]
        with self.lock:
            if self.said_bye:
                return
            self.said_bye = True
            body = torch.frombuffer(bytearray(text), dtype=torch.uint8) if text else torch.empty(0, dtype=torch.uint8)
            self.post(encode(bye_header(me, self.peer, len(text)), names), body, "goodbye")

    def post_control(self, me: str, names: NameTable, data: bytes, what: str) -> None:
        with self.lock:
            self.post(encode(control_header(me, self.peer, len(data)), names),
                      torch.frombuffer(bytearray(data), dtype=torch.uint8), what)

    def wait_sent(self, deadline: float) -> bool:
        """Whether every posted send completed (or the connection ended) before ``deadline``."""
        with self.done:
            return self.done.wait_for(lambda: self.unfinished == 0 or self.lost is not None,
                                      max(deadline - time.monotonic(), 0.0))

    def took(self, nbytes: int) -> None:
        with self.done:
            self.queued_bytes -= nbytes + _MESSAGE_COST
            self.queued -= 1

    def fail(self, lost: Lost) -> None:
        if self.lost is None:
            self.lost = lost
        self.mailbox.put(lost)
        self.inbox.end(lost.cause)
        with self.done:
            self.done.notify_all()


def _recv(pair: Pair, nbytes: int, tag: int) -> torch.Tensor:
    # Zero-filled: gloo may deliver fewer bytes than posted, and the rest must not be stale memory (it then
    # fails to verify, like any other wrong frame).
    buf = torch.zeros(nbytes, dtype=torch.uint8)
    pair.pg.recv([buf], pair.peer_rank, tag).wait(FOREVER)  # type: ignore[attr-defined]  # untyped in torch
    return buf


def _admit(pair: Pair, header: Header, limits: Limits) -> None:
    """Refuses a message the peer has no room for, before its payload is allocated."""
    if header.op == CONTROL:
        if pair.control_bytes + header.nbytes > limits.max_control_bytes:
            raise ProtocolError(f"peer '{pair.peer}' sent more than {limits.max_control_bytes} bytes of control "
                                "values on one connection", hint="a faulty or hostile peer; it was disconnected")
        pair.control_bytes += header.nbytes
        return
    if header.op == BYE:
        return
    cost = header.nbytes + _MESSAGE_COST
    with pair.done:
        if pair.queued + 1 > limits.max_queued or pair.queued_bytes + cost > limits.max_queued_bytes:
            raise ProtocolError(
                f"peer '{pair.peer}' is over its quota: {pair.queued} messages ({pair.queued_bytes} bytes) are "
                f"waiting here and it sent {header.nbytes} bytes more (limits: {limits.max_queued} messages, "
                f"{limits.max_queued_bytes} bytes)", hint="a peer that runs ahead of the schedule or floods this "
                "party is disconnected; raise max_queued_bytes only if such backlogs are expected")
        pair.queued += 1
        pair.queued_bytes += cost


def receive_loop(pair: Pair, me: str, names: NameTable, limits: Limits) -> None:
    """Receiver thread body: open, check and route each message until a goodbye, a bad frame or a lost socket.

    A goodbye is answered with one (unless this end said it first), so that both ends' receiver threads
    return instead of staying blocked inside gloo: a daemon thread that wakes up while the interpreter
    exits aborts the process.
    """
    peer = pair.peer
    while True:
        try:
            sealed = _recv(pair, _SEALED_HEADER, _TAG_HEADER)
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError for a closed or reset socket
            pair.fail(Lost(first_line(exc)))
            return
        try:
            plain = pair.channel.open(_HEADER, sealed, what="a message header")
            header = decode(plain.view(torch.int64), names, peer=peer, max_bytes=limits.max_bytes, expect_src=peer,
                            expect_dst=me)
            _admit(pair, header, limits)
            payload = pair.channel.open(_PAYLOAD, _recv(pair, header.nbytes + TAG, _TAG_PAYLOAD),
                                        extra=plain.numpy().tobytes(), what=f"the payload of a {header.kind.value}")
            if header.op == CONTROL:
                pair.inbox.put(*decode_control(payload.numpy().tobytes(), peer))
                continue
        except ProtocolError as exc:
            # This channel's frames cannot be trusted from here on: the pair is done. Tell the peer why (our own
            # direction still works), and let the group close with the pair.
            pair.fail(Lost(exc.message, error=exc))
            try:
                pair.say_bye(me, names, f"party '{me}' refused a message: {exc.message}")
            except Exception:  # noqa: BLE001, S110 - the peer left already
                pass
            return
        except Exception as exc:  # noqa: BLE001
            pair.fail(Lost(first_line(exc)))
            return
        if header.op == BYE:
            pair.fail(Lost(payload.numpy().tobytes().decode("utf-8", "replace") or "closed", bye=True))
            try:
                pair.say_bye(me, names, "")
            except Exception:  # noqa: BLE001, S110 - the peer left already
                pass
            return
        if pair.retired:
            pair.took(header.nbytes)
        else:
            pair.mailbox.put(header.message(from_bytes(payload, header)))


def complete_loop(pair: Pair, timeout: datetime.timedelta) -> None:
    """Completer thread body: waits for each posted send in order; a failure ends the connection."""
    while True:
        item = pair.sends.get()
        if item is None:
            return
        work, _, what = item
        try:
            work.wait(timeout)  # a gloo timeout closes the pair: a send stuck this long means a dead link
        except Exception as exc:  # noqa: BLE001
            pair.fail(Lost(f"{what} could not be delivered: {first_line(exc)}"))
        finally:
            item = work = None  # drop the tensor now, not when the next send arrives
            with pair.done:
                pair.unfinished -= 1
                pair.done.notify_all()


def to_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat uint8 view (sealing copies them, so the sender may reuse its tensor at once)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if not flat.numel():
        return torch.empty(0, dtype=torch.uint8)
    return flat.view(torch.uint8)


def from_bytes(buf: torch.Tensor, header: Header) -> torch.Tensor:
    if header.codec:  # an encoded payload: the Wire decodes it with the codec the plan declares
        return buf
    if header.dtype is torch.bool:
        return buf.ne(0).reshape(header.shape)  # any non-zero byte is True; no invalid bool values
    return buf.view(header.dtype).reshape(header.shape)
