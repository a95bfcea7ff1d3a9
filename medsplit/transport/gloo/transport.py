"""GlooTransport: tensors between processes over torch.distributed gloo, one 2-rank group per pair of parties.

Why per pair, and no ``init_process_group``: a global group dies with any member, so one crashed site would
stop every hospital. Here each pair of parties that talk owns a ``ProcessGroupGloo`` of two ranks (rank by
sorted name) that rendezvous under its own prefix of one ``TCPStore`` hosted by the server::

    medsplit/{run}/{a}|{b}/generation        the pair's current generation g (a counter in the store)
    medsplit/{run}/{a}|{b}/gen{g}/joined/{p} which process of party p joined generation g
    medsplit/{run}/{a}|{b}/gen{g}/...        the gloo rendezvous of generation g (a PrefixStore)

The store is open to anyone who reaches it, so it decides nothing: on every new group the two ends run a
handshake (``secure/handshake.py``) that proves each one's identity (an Ed25519 key and/or a shared secret,
from ``trust``) and derives fresh keys; every later byte on the group is sealed with them (``pair.py``). A
group whose other end cannot prove itself is closed, and the attempt fails; the next one uses a new
generation. Nothing a peer sends is unpickled, and nothing is parsed or allocated before it verifies.

A site that crashes and restarts builds a new group for the next generation while the others keep theirs;
the surviving end calls ``reconnect(peer)`` when it sees the loss.

Waiting without gloo timeouts: a gloo receive that times out closes its pair for good, so a slow peer would
turn into a broken connection. Each pair therefore has a receiver thread that always has a header receive
posted (with a far deadline) and fills a per-peer mailbox; ``recv`` waits on the mailbox with the caller's
timeout. ``send`` only seals and posts and returns; a completer thread per pair waits for the posted sends
in order, each within ``timeout``; a send that fails ends the connection, and the next ``recv`` says so
(``flush()`` and ``close()`` wait, bounded, for every send).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

from ...errors import AuthenticationError, ConfigError, MedsplitError, ProtocolError, TransportError
from ...wire.message import Message
from ..base import NetworkTransport, Store, wait_on_mailbox
from ..header import DEFAULT_MAX_BYTES, Header, NameTable, encode
from ..inbox import ControlInbox, encode_control
from ..secure import PairContext, Trust
from .pair import Limits, Lost, Pair, complete_loop, first_line, receive_loop, td, to_bytes
from .rendezvous import choose_generation, make_group, open_store, secure_group

__all__ = ["GlooTransport"]

_POLL = 0.1  # seconds between checks for a closed transport while waiting on a mailbox
_MAX_PENDING = 64  # unfinished sends per peer before send() waits for the peer to take some (bounds memory)
_ACK_WAIT = 10.0  # seconds close() waits for its goodbyes to go out and be answered
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

_OPEN: set[GlooTransport] = set()  # strong references: an unclosed transport's threads outlive its owner


@atexit.register
def _close_at_exit() -> None:
    # A receiver thread still inside gloo when the interpreter finalises aborts the process if a peer's
    # goodbye or a reset wakes it then; closing first ends those threads while the interpreter still runs.
    for transport in list(_OPEN):
        transport.close("process exiting")


class GlooTransport(NetworkTransport):
    """Point-to-point tensors between this ``party`` and its ``peers`` over gloo, sealed per pair.

    ``names``: the run's ``NameTable`` (``NameTable.from_plan(plan)``), the same at every party.
    ``host``/``port``: the rendezvous store, hosted by the party with ``is_host=True`` (the server; ``port=0``
    there picks a free port, read back from ``.port``). ``run_id`` names the run in the store.
    ``trust``: this party's identity and what it requires of each peer; ``digest``: the experiment's digest,
    compared (authenticated) in every handshake; ``hub``: the party that hosts the run, which proves itself
    first in its pairs. ``timeout``: the bound on store connection, pair rendezvous and handshake, and
    completing a send (generous: a 3D activation batch over a hospital uplink is slow). ``local_addr``: the
    address this party's gloo sockets bind to and advertise (default: 127.0.0.1 when the store is on loopback,
    else gloo's own choice, which ``GLOO_SOCKET_IFNAME`` steers). ``max_bytes``: the largest payload a peer
    may announce; ``max_queued_bytes``: what a peer may have waiting here, not yet taken by ``recv``.

    Usage: ``t = GlooTransport(...); t.connect(); ... t.close()``. CPU tensors only (CUDA tensors are copied to
    the CPU on send); nccl between two GPU parties is not implemented.
    """

    name = "gloo"
    rejoin = True

    def __init__(self, party: str, peers: Sequence[str], names: NameTable, host: str, port: int, is_host: bool,
                 run_id: str, timeout: float = 60.0, *, trust: Trust, digest: str = "", hub: str | None = None,
                 local_addr: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_queued_bytes: int = DEFAULT_MAX_BYTES) -> None:
        for who in (party, *peers):
            if "|" in who or "/" in who:
                raise ConfigError(f"party name '{who}' contains '|' or '/', which the rendezvous keys reserve",
                                  hint="rename the party in the topology")
            names.party_id(who)
        if party in peers:
            raise ConfigError(f"party '{party}' lists itself as a peer")
        self.party = party
        self.peers = tuple(sorted(set(peers)))
        self.names = names
        self.host = host
        self.is_host = is_host
        self.run_id = run_id
        self.timeout = float(timeout)
        self.trust = trust
        self.digest = digest
        self.hub = hub
        self.limits = Limits(max_bytes, max_queued_bytes)
        self.local_addr = local_addr or ("127.0.0.1" if host in _LOOPBACK else None)
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"  # this process's life, as opposed to a restart's
        self._pairs: dict[str, Pair] = {}
        self._retired: list[Pair] = []  # kept so that their groups are destroyed here, not in their threads
        self._established: dict[str, int] = {}  # last generation this process joined (connected or tried), per peer
        self._lock = threading.Lock()
        self._closed: str | None = None
        self._store, self._store_id = open_store(party, host, port, is_host, self._base, self.timeout)
        self.port: int = self._store.port
        _OPEN.add(self)

    # --- rendezvous -------------------------------------------------------------------------------

    @property
    def _base(self) -> str:
        return f"medsplit/{self.run_id}"

    def _ensure_store(self) -> None:
        """After the host restarted, reconnects to its new store; the old generations went with the old one."""
        try:
            current = self._store.get(f"{self._base}/store_id").decode()
        except Exception as exc:  # the host's store went away
            if self.is_host:
                raise TransportError(f"party '{self.party}' lost its own rendezvous store: {first_line(exc)}") from exc
            self._store, current = open_store(self.party, self.host, self.port, False, self._base, self.timeout)
        if current != self._store_id:
            self._store_id = current
            self._established.clear()

    def _initiator(self, peer: str) -> bool:
        if self.hub in (self.party, peer):
            return peer == self.hub  # the hub proves itself first in its pairs
        return self.party < peer

    def _connect_pair(self, peer: str, timeout: float) -> Pair:
        a, b = sorted((self.party, peer))
        pair_key = f"{self._base}/{a}|{b}"
        rank = 0 if self.party == a else 1
        # Its own store connection: a client blocks in wait() while holding its connection, and the pairs
        # rendezvous in parallel.
        store = self._store.clone()  # type: ignore[attr-defined]  # TCPStore.clone exists; stubs lag
        store.set_timeout(td(timeout))
        generation = choose_generation(store, pair_key, self.party, self._token, self._established.get(peer))
        store.set(f"{pair_key}/gen{generation}/joined/{self.party}", self._token)
        # Whatever happens next, this generation is used: a retry moves on to a fresh one.
        with self._lock:
            self._established[peer] = generation
        try:
            pg = make_group(store, f"{pair_key}/gen{generation}", rank, timeout, self.local_addr)
        except Exception as exc:
            raise TransportError(
                f"party '{self.party}' could not connect to '{peer}' (generation {generation}) within "
                f"{timeout:.0f} s: {first_line(exc)}",
                hint=f"start party '{peer}' with run id '{self.run_id}' and rendezvous {self.host}:{self.port}; "
                     f"check that the two can reach each other") from exc
        ctx = PairContext(self.run_id, self.party, peer, self._initiator(peer), generation, self.digest)
        try:
            channel = secure_group(pg, 1 - rank, ctx, self.trust, timeout)
        except MedsplitError:
            raise
        except Exception as exc:  # noqa: BLE001 - gloo's errors on a group that broke mid-handshake
            raise TransportError(f"the handshake with '{peer}' (gen {generation}) broke: {first_line(exc)}") from exc
        pair = Pair(peer, rank, generation, pg, channel)
        pair.threads = [
            threading.Thread(target=receive_loop, args=(pair, self.party, self.names, self.limits),
                             name=f"medsplit-gloo-{self.party}<-{peer}", daemon=True),
            threading.Thread(target=complete_loop, args=(pair, td(self.timeout)),
                             name=f"medsplit-gloo-{self.party}->{peer}", daemon=True)]
        for t in pair.threads:
            t.start()
        return pair

    def connect(self, peers: Iterable[str] | None = None, *, timeout: float | None = None) -> None:
        """Builds and authenticates the pair groups (all peers by default) in parallel, each within ``timeout``.

        Raises a TransportError naming every peer that did not show up or could not be authenticated (an
        AuthenticationError when that is all that went wrong); the pairs that did connect stay usable.
        """
        self._check_open()
        timeout = self.timeout if timeout is None else timeout
        todo = [p for p in (self.peers if peers is None else peers) if p not in self._pairs]
        for p in todo:
            self._check_peer(p)
        self._ensure_store()
        errors: dict[str, BaseException] = {}

        def work(peer: str) -> None:
            try:
                pair = self._connect_pair(peer, timeout)
                with self._lock:
                    self._pairs[peer] = pair
            except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
                errors[peer] = exc

        threads = [threading.Thread(target=work, args=(p,), daemon=True) for p in todo]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 2 * timeout + 10.0  # rendezvous, then handshake, each bounded by `timeout`
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0.0))
        missing = [p for p in todo if p not in self._pairs and p not in errors]
        for p in missing:
            errors[p] = TransportError(f"party '{self.party}' timed out connecting to '{p}'")
        if errors:
            detail = "; ".join(f"'{p}': {getattr(e, 'message', None) or first_line(e)}" for p, e in errors.items())
            cls = AuthenticationError if all(isinstance(e, AuthenticationError) for e in errors.values()) \
                else TransportError
            raise cls(f"party '{self.party}' could not connect to {sorted(errors)}: {detail}",
                      hint="start every listed party with the same run and rendezvous address, and the study's "
                           "credentials")

    def reconnect(self, peer: str, *, timeout: float | None = None) -> int:
        """A fresh, authenticated connection to ``peer`` in the next generation; returns that generation.

        Call it after a recv or send to ``peer`` raised a TransportError, or to connect to one peer alone. The
        end that joined generation g moves the store's counter from g to g + 1 with compare-and-set, so both
        ends meet at g + 1; a restarted process takes the counter's value unless an earlier life of itself
        joined it (then it moves the counter on). The old mailbox is dropped (resume from a checkpoint).
        Raises AuthenticationError (or RefusedError) when the other end could not prove itself or refused this one.
        """
        self._check_open()
        self._check_peer(peer)
        old = self._pairs.pop(peer, None)
        if old is not None:
            self._retire(old, "reconnecting")
        self._ensure_store()
        pair = self._connect_pair(peer, self.timeout if timeout is None else timeout)
        with self._lock:
            self._pairs[peer] = pair
        return pair.generation

    def drop(self, peer: str, reason: str) -> None:
        """Closes the connection to ``peer`` (with a goodbye that carries ``reason``), if there is one."""
        if (old := self._pairs.pop(peer, None)) is not None:
            self._retire(old, reason)

    @property
    def store(self) -> Store:
        """The rendezvous store (hosted here or by the host); after a host restart, its new store."""
        return cast(Store, self._store)

    def refresh_store(self) -> None:
        """Reaches the host's store again if it went away (the host restarted); raises if it cannot."""
        self._ensure_store()

    def generation(self, peer: str) -> int:
        """The generation of the current connection to ``peer``."""
        return self._pair(peer, "ask for its generation").generation

    @property
    def connected(self) -> list[str]:
        """Peers with a connection that has not been lost."""
        return [p for p, pair in self._pairs.items() if pair.lost is None]

    # --- messages ---------------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        self._check_open()
        if msg.src != self.party:
            raise TransportError(f"party '{self.party}' cannot send {msg.describe()} on behalf of '{msg.src}'")
        pair = self._pair(msg.dst, f"send {msg.describe()}")
        what = msg.describe()
        header = encode(Header.of(msg), self.names)
        payload = to_bytes(msg.tensor)
        with pair.done:  # bounds the memory held by sends the peer has not taken yet
            if not pair.done.wait_for(lambda: pair.unfinished < _MAX_PENDING or pair.lost is not None,
                                      self.timeout):
                raise TransportError(f"party '{self.party}' could not send {what}: '{msg.dst}' has not taken "
                                     f"{pair.unfinished} earlier sends within {self.timeout:.0f} s")
        if pair.lost is not None:
            raise self._lost_error(pair, f"sending {what}")
        with pair.lock:
            try:
                pair.post(header, payload, what)
            except MedsplitError:
                raise
            except Exception as exc:  # gloo refuses to post on a closed pair
                pair.fail(Lost(first_line(exc)))
                raise self._lost_error(pair, f"sending {what}") from exc

    def recv(self, src: str, dst: str, *, timeout: float, awaiting: str) -> Message:
        self._check_open()
        if dst != self.party:
            raise TransportError(f"party '{self.party}' cannot receive messages addressed to '{dst}'")
        pair = self._pair(src, f"wait for {awaiting}")
        item = wait_on_mailbox(pair.mailbox, timeout=timeout, closed=lambda: self._closed, src=src, dst=dst,
                               awaiting=awaiting, via=f" from '{src}' over gloo (generation {pair.generation})",
                               poll=_POLL)
        if isinstance(item, Lost):
            pair.mailbox.put(item)  # every later recv on this connection fails the same way
            raise self._lost_error(pair, f"waiting for {awaiting}")
        pair.took(item.tensor.numel() * item.tensor.element_size())
        return item

    def post(self, peer: str, key: str, value: Any) -> None:
        """Sends one control-plane value (JSON) to ``peer`` on their sealed connection."""
        self._check_open()
        pair = self._pair(peer, f"send control value '{key}'")
        if pair.lost is not None:
            raise self._lost_error(pair, f"sending control value '{key}'")
        try:
            pair.post_control(self.party, self.names, encode_control(key, value), f"control value '{key}'")
        except MedsplitError:
            raise
        except Exception as exc:  # noqa: BLE001
            pair.fail(Lost(first_line(exc)))
            raise self._lost_error(pair, f"sending control value '{key}'") from exc

    def inbox(self, peer: str) -> ControlInbox:
        """The control values received from ``peer`` on the current connection."""
        return self._pair(peer, "read its control values").inbox

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every send so far has completed, at most ``timeout`` (default: the transport's)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for pair in list(self._pairs.values()):
            if not pair.wait_sent(deadline):
                raise TransportError(f"party '{self.party}' could not deliver {pair.unfinished} sends to "
                                     f"'{pair.peer}' within {limit:.0f} s",
                                     hint=f"check that party '{pair.peer}' is running and reachable")
            if pair.lost is not None and not pair.lost.bye:
                raise self._lost_error(pair, "flushing its sends")
    def close(self, reason: str | None = None) -> None:
        """Says goodbye to every peer (with ``reason``), completes sends for a bounded time, drops the groups.

        A peer's pending or next ``recv`` from this party then fails at once with a TransportError that carries
        ``reason``, instead of waiting out its timeout.
        """
        if self._closed is not None:
            return
        self._closed = reason or "closed"
        _OPEN.discard(self)
        for pair in list(self._pairs.values()):
            self._retire(pair, self._closed)
        self._pairs.clear()
        # The peers answer the goodbye at once (from their receiver threads); wait, bounded, so that no thread
        # of this process is still inside gloo when the interpreter exits (that aborts the process).
        deadline = time.monotonic() + min(self.timeout, _ACK_WAIT)
        for pair in self._retired:
            for t in pair.threads:
                t.join(max(deadline - time.monotonic(), 0.0))

    # --- helpers ----------------------------------------------------------------------------------

    def _retire(self, pair: Pair, reason: str) -> None:
        self._retired = [p for p in self._retired if any(t.is_alive() for t in p.threads)]
        pair.retired = True
        if pair.lost is None:
            try:
                pair.say_bye(self.party, self.names, reason)
                pair.wait_sent(time.monotonic() + min(self.timeout, _ACK_WAIT))
            except Exception:  # noqa: BLE001, S110 - the peer is gone already; nothing to say goodbye to
                pass
        pair.sends.put(None)
        pair.fail(Lost(f"connection retired ({reason})"))
        if any(t.is_alive() for t in pair.threads):
            self._retired.append(pair)
        # else: its group is destroyed with the last reference, here, which closes its sockets at once, so a
        # peer still reading from it sees the connection end instead of waiting.

    def _check_open(self) -> None:
        if self._closed is not None:
            raise TransportError(f"party '{self.party}': transport closed ({self._closed})")

    def _check_peer(self, peer: str) -> None:
        if peer not in self.peers:
            raise TransportError(f"party '{self.party}' has no connection to '{peer}': it is not one of its "
                                 f"peers {list(self.peers)}", hint="the topology does not connect these parties")

    def _pair(self, peer: str, doing: str) -> Pair:
        self._check_peer(peer)
        pair = self._pairs.get(peer)
        if pair is None:
            raise TransportError(f"party '{self.party}' cannot {doing}: not connected to '{peer}'",
                                 hint="call connect() (or reconnect(peer) after a failure) first")
        return pair

    def _lost_error(self, pair: Pair, doing: str) -> MedsplitError:
        lost = pair.lost or Lost("connection lost")
        if lost.error is not None:
            return ProtocolError(f"{lost.error.message} (party '{self.party}' was {doing})", hint=lost.error.hint)
        if lost.bye:
            return TransportError(f"party '{pair.peer}' closed its connection to '{self.party}' while "
                                  f"'{self.party}' was {doing}: {lost.cause}",
                                  hint=f"see party '{pair.peer}''s log; once it is back, call reconnect('{pair.peer}')")
        return TransportError(f"party '{self.party}' lost its connection to '{pair.peer}' (generation "
                              f"{pair.generation}) while {doing}: {lost.cause}",
                              hint=f"party '{pair.peer}' crashed or was stopped: restart it with the same command, "
                                   f"then call reconnect('{pair.peer}') here")
