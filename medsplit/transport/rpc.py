"""RpcTransport: messages as torch.distributed.rpc calls over TensorPipe, for clusters inside one trust domain.

.. warning::
   **rpc unpickles what peers send.** Every rpc call carries a pickled function reference and arguments,
   and unpickling data from a peer lets that peer run code in this process. Use this transport only
   between machines that already trust each other (one hospital's cluster, one lab's nodes). Between
   institutions use ``GlooTransport`` (the default), which carries tensors only and unpickles nothing.

Each party is an rpc worker named after it; ``send`` is an ``rpc_async`` to ``_deliver``, which runs in the
destination process and puts the message into that party's mailbox (one FIFO per source). rpc may run
two calls from one caller concurrently, so each message carries a per-(src, dst) sequence number and the
mailbox releases messages in that order. The header travels as the same int64 tensor the gloo wire uses
and is validated the same way, so a confused peer gets the same clear errors. The rpc group is static:
every party of the run must join (``connect``), and a party that dies cannot rejoin it; use gloo where
sites must be able to restart on their own.

Because a peer's call can run code here, rpc refuses a rendezvous address off loopback unless the caller
says the network is one trust domain (``allow_remote=True``; ``--rpc-off-loopback`` on the command line).
Nothing is encrypted or authenticated: ``trust`` is accepted for a uniform constructor, and not used.
"""

from __future__ import annotations

import collections
import datetime
import queue
import re
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch.distributed import PrefixStore, TCPStore, rpc
from torch.distributed.rendezvous import register_rendezvous_handler

from ..errors import (
    ConfigError,
    MedsplitError,
    ProtocolError,
    TransportError,
)
from ..wire.message import Message
from .base import NetworkTransport, Store, wait_on_mailbox
from .header import CONTROL, DEFAULT_MAX_BYTES, Header, NameTable, control_header, decode, encode
from .inbox import ControlInbox, decode_control, encode_control

__all__ = ["RpcTransport"]

_SCHEME = "medsplit"  # our rendezvous handler hands rpc a store made here, with our timeouts
_POLL = 0.1
_RPC_NAME = re.compile(r"[A-Za-z0-9_:\-]{1,127}")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_STORES: dict[str, PrefixStore] = {}
_ACTIVE: RpcTransport | None = None  # rpc is per process: one transport at a time
_ACTIVE_LOCK = threading.Lock()


def _rendezvous(url: str, **_: object) -> Iterator[tuple[Any, int, int]]:
    parsed = urlparse(url)
    query = dict(kv.split("=", 1) for kv in parsed.query.split("&") if "=" in kv)
    yield _STORES[parsed.path.lstrip("/")], int(query["rank"]), int(query["world_size"])


try:
    register_rendezvous_handler(_SCHEME, _rendezvous)  # type: ignore[no-untyped-call, unused-ignore]
except RuntimeError:  # registered already (the module was loaded twice)
    pass


def _deliver(src: str, seq: int, header: torch.Tensor, payload: torch.Tensor) -> None:
    """Runs in the destination process, on an rpc thread: hands the message to its mailbox."""
    transport = _ACTIVE
    if transport is None:
        raise TransportError(f"a message from '{src}' arrived at a process whose rpc transport is closed")
    transport._accept(src, seq, header, payload)


class _Mailbox:
    """Messages from one source, released in sequence order."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.next = 0
        self.held: dict[int, object] = {}
        self.lock = threading.Lock()

    def put(self, seq: int, item: object) -> None:
        with self.lock:
            self.held[seq] = item
            while self.next in self.held:
                item = self.held.pop(self.next)
                if item is not None:  # a control value's place in the sequence; it went to the inbox
                    self.queue.put(item)
                self.next += 1


class RpcTransport(NetworkTransport):
    """This ``party`` as an rpc worker among ``peers`` (every other party of the run: the group is static).

    ``host``/``port``: the rendezvous store, hosted by the party with ``is_host=True`` (``port=0`` picks a
    free port there, read back from ``.port``). Call ``connect()`` at every party, then use it; ``close()``
    at every party ends the group. Read the module's warning: rpc unpickles what peers send.
    """

    name = "rpc"

    def __init__(self, party: str, peers: Sequence[str], names: NameTable, host: str, port: int, is_host: bool,
                 run_id: str, timeout: float = 60.0, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 worker_threads: int = 8, allow_remote: bool = False, **_ignored: object) -> None:
        if host not in _LOOPBACK and not allow_remote:
            raise ConfigError(f"party '{party}': transport 'rpc' refuses the rendezvous address {host}: rpc unpickles "
                              "what peers send, so anyone who reaches this party over the network could run code in "
                              "it, and rpc has no authentication or encryption",
                              hint="use --transport gloo between institutions (authenticated, encrypted); inside one "
                                   "trust domain (one hospital's own cluster) pass --rpc-off-loopback")
        if party in peers:
            raise ConfigError(f"party '{party}' lists itself as a peer")
        for who in (party, *peers):
            names.party_id(who)
            if not _RPC_NAME.fullmatch(who):
                raise ConfigError(f"party name '{who}' cannot be an rpc worker name",
                                  hint="rpc allows letters, digits, '_', ':' and '-', up to 127 characters")
        self.party = party
        self.peers = tuple(sorted(set(peers)))
        self.world = tuple(sorted({party, *peers}))
        self.names = names
        self.host = host
        self.is_host = is_host
        self.run_id = run_id
        self.timeout = float(timeout)
        self.max_bytes = max_bytes
        self.worker_threads = worker_threads
        self._boxes = {p: _Mailbox() for p in self.peers}
        self._inboxes = {p: ControlInbox(p) for p in self.peers}
        self._seq: dict[str, int] = collections.defaultdict(int)
        self._futures: dict[str, collections.deque[Any]] = collections.defaultdict(collections.deque)
        self._send_lock = threading.Lock()
        self._closed: str | None = None
        self._connected = False
        try:
            self._store = TCPStore(host, port, None, is_host, datetime.timedelta(seconds=self.timeout),
                                   wait_for_workers=False)
        except Exception as exc:
            where = "host the rendezvous store on" if is_host else "reach the rendezvous store at"
            raise TransportError(f"party '{party}' could not {where} {host}:{port}: {exc}",
                                 hint="start the server first and check the address and port") from exc
        self.port: int = self._store.port

    def connect(self, peers: Iterable[str] | None = None, *, timeout: float | None = None) -> None:
        """Joins the rpc group; returns once every party of the run has joined, or raises within ``timeout``.

        The group is static: ``peers``, if given, must be every other party of the run.
        """
        global _ACTIVE
        if peers is not None and set(peers) != set(self.peers):
            raise TransportError(f"party '{self.party}': an rpc group is joined by every party of the run at once, "
                                 f"not by {sorted(peers)} of {list(self.peers)}",
                                 hint="use gloo where parties must be able to join or leave on their own")
        if self._connected:
            return
        with _ACTIVE_LOCK:
            if _ACTIVE is not None:
                raise TransportError(f"party '{self.party}': this process already runs rpc transport for "
                                     f"'{_ACTIVE.party}'", hint="run one rpc party per process")
            _ACTIVE = self
        key = f"{self.run_id}/{self.party}"
        _STORES[key] = PrefixStore(f"medsplit/{self.run_id}/rpc", self._store)
        opts = rpc.TensorPipeRpcBackendOptions(
            init_method=f"{_SCHEME}://{self.host}:{self.port}/{key}", rpc_timeout=self.timeout,
            num_worker_threads=self.worker_threads,
            # Plain TCP: shared-memory and CUDA channels fail inside containers and are not needed for CPU.
            _transports=["uv"], _channels=["basic"])
        try:
            rpc.init_rpc(self.party, rank=self.world.index(self.party),  # type: ignore[no-untyped-call, unused-ignore]
                         world_size=len(self.world), rpc_backend_options=opts)
        except Exception as exc:
            with _ACTIVE_LOCK:
                _ACTIVE = None
            raise TransportError(f"party '{self.party}' could not join the rpc group {list(self.world)} within "
                                 f"{self.timeout:.0f} s: {exc}",
                                 hint="start every party of the run with the same rendezvous address") from exc
        finally:
            _STORES.pop(key, None)
        self._connected = True

    # --- messages ---------------------------------------------------------------------------------

    @property
    def store(self) -> Store:  # torch's stubs type TCPStore.set's value as str only
        """The rendezvous store (hosted here or by the host)."""
        return cast(Store, self._store)

    def reconnect(self, peer: str, *, timeout: float | None = None) -> int:
        raise TransportError(f"party '{self.party}' cannot reconnect to '{peer}': an rpc group is static, and a "
                             "party that left it cannot rejoin",
                             hint="restart every party of the run, or use gloo (sites can restart on their own)")

    @property
    def connected(self) -> list[str]:
        """Every peer while the group is up (rpc has no per-peer connection to lose)."""
        return list(self.peers) if self._connected and self._closed is None else []

    def send(self, msg: Message) -> None:
        self._check(msg.dst, f"send {msg.describe()}")
        if msg.src != self.party:
            raise TransportError(f"party '{self.party}' cannot send {msg.describe()} on behalf of '{msg.src}'")
        header = encode(Header.of(msg), self.names)
        payload = msg.tensor.detach().to("cpu").clone()  # rpc may serialise after this returns
        self._call(msg.dst, header, payload, msg.describe())

    def _call(self, dst: str, header: torch.Tensor, payload: torch.Tensor, what: str) -> None:
        self._check(dst, f"send {what}")
        self._reap(dst, block_until=None)
        with self._send_lock:
            seq = self._seq[dst]
            self._seq[dst] += 1
            try:
                fut = rpc.rpc_async(dst, _deliver, args=(self.party, seq, header, payload), timeout=self.timeout)
            except Exception as exc:
                raise TransportError(f"party '{self.party}' could not send {what}: {exc}") from exc
            self._futures[dst].append((fut, what))

    def post(self, peer: str, key: str, value: object) -> None:
        """A control-plane value to ``peer``, delivered in order with its messages."""
        data = encode_control(key, value)
        header = encode(control_header(self.party, peer, len(data)), self.names)
        self._call(peer, header, torch.frombuffer(bytearray(data), dtype=torch.uint8), f"control value '{key}'")

    def inbox(self, peer: str) -> ControlInbox:
        self._check(peer, "read its control values")
        return self._inboxes[peer]

    def drop(self, peer: str, reason: str) -> None:
        """An rpc group is static: a connection cannot be closed alone (the group ends with ``close``)."""

    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message:
        self._check(src, f"wait for {awaiting}")
        if dst != self.party:
            raise TransportError(f"party '{self.party}' cannot receive messages addressed to '{dst}'")
        self._reap(src, block_until=None)
        box = self._boxes[src]
        item = wait_on_mailbox(box.queue, timeout=timeout, closed=lambda: self._closed, src=src, dst=dst,
                               awaiting=awaiting, via=f" from '{src}' over rpc", poll=_POLL)
        if isinstance(item, MedsplitError):
            raise type(item)(f"{item.message} (party '{dst}' was waiting for {awaiting})", hint=item.hint)
        return cast(Message, item)

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every sent message was delivered to its destination's mailbox."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for peer in list(self._futures):
            self._reap(peer, block_until=deadline)

    def close(self, reason: str | None = None) -> None:
        """Leaves the rpc group: gracefully (waiting, bounded, for every party to close) unless ``reason``."""
        global _ACTIVE
        if self._closed is not None:
            return
        self._closed = reason or "closed"
        if not self._connected:
            return
        graceful = reason is None
        if graceful:
            try:
                self.flush()
            except MedsplitError:
                graceful = False
        try:
            with warnings.catch_warnings():
                # rpc's own shutdown barrier uses a deprecated gloo call; not ours to fix.
                warnings.filterwarnings("ignore", message=".*as a ProcessGroup. This usage is deprecated")
                rpc.shutdown(graceful=graceful, timeout=self.timeout)
        except Exception as exc:
            if graceful:
                raise TransportError(f"party '{self.party}' could not leave the rpc group cleanly: {exc}") from exc
        finally:
            with _ACTIVE_LOCK:
                if _ACTIVE is self:
                    _ACTIVE = None

    # --- helpers ----------------------------------------------------------------------------------

    def _check(self, peer: str, doing: str) -> None:
        if self._closed is not None:
            raise TransportError(f"party '{self.party}' cannot {doing}: transport closed ({self._closed})")
        if not self._connected:
            raise TransportError(f"party '{self.party}' cannot {doing}: not connected", hint="call connect() first")
        if peer not in self._boxes:
            raise TransportError(f"party '{self.party}' cannot {doing}: '{peer}' is not one of its peers "
                                 f"{list(self.peers)}")

    def _reap(self, peer: str, block_until: float | None) -> None:
        """Surfaces failed deliveries to ``peer``; with a deadline, waits for all of them."""
        futures = self._futures[peer]
        while futures:
            fut, what = futures[0]
            if not fut.done():
                if block_until is None:
                    return
                while not fut.done():
                    if time.monotonic() > block_until:
                        raise TransportError(f"party '{self.party}' could not deliver {what} to '{peer}' in time")
                    time.sleep(0.005)
            futures.popleft()
            try:
                fut.wait()
            except Exception as exc:  # rpc re-raises the remote error or a timeout here
                raise TransportError(f"party '{self.party}' could not deliver {what} to '{peer}': "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
                                     hint=f"check that party '{peer}' is running") from exc

    def _accept(self, src: str, seq: int, header: torch.Tensor, payload: torch.Tensor) -> None:
        box = self._boxes.get(src)
        if box is None:
            raise TransportError(f"party '{self.party}' got a message from '{src}', which is not one of its peers")
        try:
            h = decode(header, self.names, peer=src, max_bytes=self.max_bytes, expect_src=src,
                       expect_dst=self.party)
            if not isinstance(payload, torch.Tensor) or payload.dtype != h.payload_dtype or \
                    tuple(payload.shape) != h.payload_shape:
                raise ProtocolError(f"peer '{src}' sent a payload that does not match its header ({h.payload_dtype} "
                                    f"{h.payload_shape})", hint="the peer runs an incompatible or faulty medsplit")
            if h.op == CONTROL:
                self._inboxes[src].put(*decode_control(payload.numpy().tobytes(), src))
        except ProtocolError as exc:
            box.put(seq, exc)
            raise
        box.put(seq, h.message(payload) if h.op != CONTROL else None)
