"""One connection of a GlooTransport: a 2-rank gloo group with its receiver and send-completer threads.

The receiver thread always has a header receive posted and fills the pair's mailbox; the completer waits
for each posted send in order. A header that cannot be trusted, a goodbye, or a lost socket ends the pair
(``Lost``), and the next receive from that peer says why.
"""

from __future__ import annotations

import datetime
import queue
import threading
import time

import torch
from torch.distributed import ProcessGroupGloo

from ...errors import ProtocolError
from ..header import BYE, HEADER_LEN, MAX_REASON_BYTES, Header, NameTable, bye_header, decode, encode

__all__ = ["Pair", "Lost", "receive_loop", "complete_loop", "to_bytes", "from_bytes", "first_line", "td", "FOREVER"]

_TAG_HEADER, _TAG_PAYLOAD = 1, 2
# A receive posted by the receiver thread waits this long; gloo closes the pair when it runs out, so it is
# "forever" for a training run (11.6 days idle on one pair) while staying far from clock overflow.
FOREVER = datetime.timedelta(seconds=1_000_000)


def td(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=max(seconds, 0.001))


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class Lost:
    """Why a pair's connection ended: a lost socket, a goodbye, or a header that could not be trusted."""

    def __init__(self, cause: str, *, bye: bool = False, error: ProtocolError | None = None) -> None:
        self.cause, self.bye, self.error = cause, bye, error


class Pair:
    """One generation of the connection to one peer: its group, mailbox, send queue and threads."""

    def __init__(self, peer: str, rank: int, generation: int, pg: ProcessGroupGloo) -> None:
        self.peer = peer
        self.peer_rank = 1 - rank
        self.generation = generation
        self.pg = pg
        self.mailbox: queue.Queue = queue.Queue()
        self.sends: queue.Queue = queue.Queue()  # (work, tensor, what) for the completer; None ends it
        self.unfinished = 0
        self.done = threading.Condition()  # notified whenever a send completes or the connection is lost
        self.lock = threading.Lock()  # keeps one message's header and payload together, and the goodbye once
        self.lost: Lost | None = None
        self.retired = False
        self.said_bye = False
        self.threads: list[threading.Thread] = []

    def post(self, tensors: list[torch.Tensor], what: str) -> None:
        """Posts one message (header, then payload) for the completer; call with ``lock`` held."""
        for tag, tensor in zip((_TAG_HEADER, _TAG_PAYLOAD), tensors):
            work = self.pg.send([tensor], self.peer_rank, tag)
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
            bye = encode(bye_header(me, self.peer, len(text)), names)
            self.post([bye, torch.tensor(list(text), dtype=torch.uint8)] if text else [bye], "goodbye")

    def wait_sent(self, deadline: float) -> bool:
        """Whether every posted send completed (or the connection ended) before ``deadline``."""
        with self.done:
            return self.done.wait_for(lambda: self.unfinished == 0 or self.lost is not None,
                                      max(deadline - time.monotonic(), 0.0))

    def fail(self, lost: Lost) -> None:
        if self.lost is None:
            self.lost = lost
        self.mailbox.put(lost)
        with self.done:
            self.done.notify_all()


def receive_loop(pair: Pair, me: str, names: NameTable, max_bytes: int) -> None:
    """Receiver thread body: header, then payload, into the mailbox, until a goodbye or a lost socket.

    A goodbye is answered with one (unless this end said it first), so that both ends' receiver threads
    return instead of staying blocked inside gloo: a daemon thread that wakes up while the interpreter
    exits aborts the process.
    """
    pg, peer = pair.pg, pair.peer
    while True:
        raw = torch.empty(HEADER_LEN, dtype=torch.int64)
        try:
            pg.recv([raw], pair.peer_rank, _TAG_HEADER).wait(FOREVER)
            header = decode(raw, names, peer=peer, max_bytes=max_bytes, expect_src=peer, expect_dst=me)
        except ProtocolError as exc:
            # The payload size is unknown now, so the payload stream cannot be resynchronised: the pair is
            # done. Tell the peer why, then read headers only (their own tag) until its goodbye comes back.
            pair.fail(Lost(exc.message, error=exc))
            try:
                pair.say_bye(me, names, f"party '{me}' refused a message: {exc.message}")
                _drain_headers(pair, names)
            except Exception:  # noqa: BLE001, S110 - the peer left already
                pass
            return
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError for a closed or reset socket
            pair.fail(Lost(first_line(exc)))
            return
        buf = torch.empty(header.nbytes, dtype=torch.uint8)
        if header.nbytes:
            try:
                pg.recv([buf], pair.peer_rank, _TAG_PAYLOAD).wait(FOREVER)
            except Exception as exc:  # noqa: BLE001
                pair.fail(Lost(first_line(exc)))
                return
        if header.op == BYE:
            pair.fail(Lost(bytes(buf.tolist()).decode("utf-8", "replace") or "closed", bye=True))
            try:
                pair.say_bye(me, names, "")  # no payload: the peer may be reading headers only
            except Exception:  # noqa: BLE001, S110 - the peer left already
                pass
            return
        if not pair.retired:
            pair.mailbox.put(header.message(from_bytes(buf, header)))


def _drain_headers(pair: Pair, names: NameTable) -> None:
    while True:
        raw = torch.empty(HEADER_LEN, dtype=torch.int64)
        pair.pg.recv([raw], pair.peer_rank, _TAG_HEADER).wait(FOREVER)
        try:
            if decode(raw, names, peer=pair.peer).op == BYE:
                return
        except ProtocolError:
            continue


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


def to_bytes(tensor: torch.Tensor, copy: bool) -> torch.Tensor:
    # By default a copy: the send completes later, and the sender must be free to modify its tensor meanwhile.
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if not flat.numel():
        return torch.empty(0, dtype=torch.uint8)
    return flat.view(torch.uint8).clone() if copy else flat.view(torch.uint8)


def from_bytes(buf: torch.Tensor, header: Header) -> torch.Tensor:
    if header.codec:  # an encoded payload: the Wire decodes it with the codec the plan declares
        return buf
    if header.dtype is torch.bool:
        return buf.ne(0).reshape(header.shape)  # any non-zero byte is True; no invalid bool values
    return buf.view(header.dtype).reshape(header.shape)
