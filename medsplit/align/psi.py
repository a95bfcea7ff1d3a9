"""Private set intersection of patient IDs (openmined.psi) and keyed batch fingerprints; raw IDs never cross.

Messages are opaque bytes passed to ``send(bytes)`` and read from ``recv() -> bytes``, so that the
caller routes them through medsplit's metered Transport (or in-memory queues in tests). ``recv``
must enforce its own timeout and raise on expiry; a PSI run never waits without one.

Protocol between a leader (the party that owns the labels) and each follower, all semi-honest:

    1. leader as PSI server, follower as client:  follower learns  F ∩ L  (its own IDs only)
    2. follower as server, leader as client:      leader learns    L ∩ F
    3. leader: C = L ∩ F_1 ∩ ... ∩ F_n; order key K = SHA-256 of the run's context and C (so the same
       study on the same patients batches alike in every run and mode, while K is unknown to anyone who
       does not hold C); sends each follower K and the HMAC_K of C's IDs sorted by HMAC_K. A follower
       maps them back to its own IDs.

No party learns IDs it does not hold, and the agreed order is a keyed hash order, not any
site's own row order. Set sizes are visible to the peer (they size the PSI messages).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ConfigError, ProtocolError

__all__ = ["psi_intersect", "align_leader", "align_follower", "agreed_order", "order_key"]

Send = Callable[[bytes], None]
Recv = Callable[[], bytes]
_MAGIC = b"MSPSI1"


def _psi() -> Any:
    try:
        import private_set_intersection.python as psi  # the openmined.psi package
    except ImportError as e:  # an optional dependency, imported where used
        raise ConfigError("private set intersection needs the openmined.psi package",
                          hint="pip install openmined.psi") from e
    return psi


def _pack(kind: bytes, *parts: bytes) -> bytes:
    return _MAGIC + kind + b"".join(struct.pack(">Q", len(p)) + p for p in parts)


def _unpack(msg: bytes, kind: bytes, n: int, step: str) -> list[bytes]:
    if not isinstance(msg, (bytes, bytearray)) or not msg.startswith(_MAGIC + kind):
        got = bytes(msg[len(_MAGIC):len(_MAGIC) + 1]) if isinstance(msg, (bytes, bytearray)) else type(msg).__name__
        raise ProtocolError(f"PSI {step}: expected a {kind!r} message, got {got!r}",
                            hint="both parties must run the same medsplit version and call the matching roles")
    parts, pos = [], len(_MAGIC) + 1
    for _ in range(n):
        if pos + 8 > len(msg):
            raise ProtocolError(f"PSI {step}: message truncated")
        (size,) = struct.unpack(">Q", msg[pos:pos + 8])
        parts.append(bytes(msg[pos + 8:pos + 8 + size]))
        pos += 8 + size
    if pos != len(msg):
        raise ProtocolError(f"PSI {step}: message has trailing bytes")
    return parts


def _clean(ids: Iterable[str]) -> list[str]:
    return sorted({str(i).strip() for i in ids if str(i).strip()})


def _serve(ids: list[str], send: Send, recv: Recv, fpr: float) -> None:
    psi = _psi()
    server = psi.server.CreateWithNewKey(True)  # the client, not the server, learns the intersection
    size_bytes, request_bytes = _unpack(recv(), b"Q", 2, "request")
    (n_client,) = struct.unpack(">Q", size_bytes)
    request = psi.Request()
    request.ParseFromString(request_bytes)
    # RAW setup: exact (no false positives), at ~33 bytes per server ID
    setup = server.CreateSetupMessage(fpr, max(n_client, 1), ids, psi.DataStructure.RAW)
    response = server.ProcessRequest(request)
    send(_pack(b"R", setup.SerializeToString(), response.SerializeToString()))


def _query(ids: list[str], send: Send, recv: Recv) -> list[str]:
    psi = _psi()
    client = psi.client.CreateWithNewKey(True)  # reveal_intersection: this side learns which of its IDs are shared
    send(_pack(b"Q", struct.pack(">Q", len(ids)), client.CreateRequest(ids).SerializeToString()))
    setup_bytes, response_bytes = _unpack(recv(), b"R", 2, "response")
    setup, response = psi.ServerSetup(), psi.Response()
    setup.ParseFromString(setup_bytes)
    response.ParseFromString(response_bytes)
    return sorted(ids[i] for i in client.GetIntersection(setup, response))


def psi_intersect(ids: Iterable[str], send: Send, recv: Recv, *, role: str, fpr: float = 1e-9) -> list[str]:
    """Both parties learn the intersection of their ID sets (sorted), and nothing else about the other's IDs.

    Two one-way PSI runs: ``role="leader"`` serves first, then queries; ``"follower"`` the reverse.
    """
    mine = _clean(ids)
    if role == "leader":
        _serve(mine, send, recv, fpr)
        return _query(mine, send, recv)
    if role == "follower":
        common = _query(mine, send, recv)
        _serve(mine, send, recv, fpr)
        return common
    raise ConfigError(f"PSI role must be 'leader' or 'follower', got {role!r}")


def _token(key: bytes, rid: str) -> bytes:
    return hmac.new(key, rid.encode("utf-8"), hashlib.sha256).digest()


def agreed_order(ids: Iterable[str], key: bytes) -> list[str]:
    """IDs sorted by HMAC-SHA256 under ``key``: every holder of the key and the IDs gets the same order."""
    return sorted(set(ids), key=lambda r: _token(key, r))


def order_key(common: Iterable[str], context: bytes) -> bytes:
    """The agreed order's key, from the run's ``context`` and the common IDs (which only the sites hold)."""
    h = hashlib.sha256(b"medsplit-order-v1|" + struct.pack(">Q", len(context)) + context)
    for rid in sorted(common):
        b = rid.encode("utf-8")
        h.update(struct.pack(">I", len(b)) + b)
    return h.digest()


def align_leader(ids: Iterable[str], peers: Mapping[str, tuple[Send, Recv]], *, context: bytes = b"",
                 fpr: float = 1e-9) -> list[str]:
    """The label owner's side: PSI with every follower, then broadcast the agreed order as keyed tokens.

    ``peers`` maps a follower's name to its ``(send, recv)``; ``context`` names the run (the same in every
    mode of one study, so that in-process and multi-process runs agree on the order). Returns the agreed
    order of the IDs held by every party.
    """
    mine = _clean(ids)
    common = set(mine)
    for send, recv in peers.values():
        common &= set(psi_intersect(mine, send, recv, role="leader", fpr=fpr))
    key = order_key(common, context)
    order = agreed_order(common, key)
    tokens = b"".join(_token(key, r) for r in order)
    for send, _recv in peers.values():
        send(_pack(b"O", key, tokens))
    return order


def align_follower(ids: Iterable[str], send: Send, recv: Recv, *, fpr: float = 1e-9) -> list[str]:
    """A follower's side of ``align_leader``: returns the same agreed order, as its own IDs."""
    mine = _clean(ids)
    shared = psi_intersect(mine, send, recv, role="follower", fpr=fpr)
    key, tokens = _unpack(recv(), b"O", 2, "order")
    if len(tokens) % 32:
        raise ProtocolError("PSI order: token list is not a multiple of 32 bytes")
    lookup = {_token(key, r): r for r in shared}
    order = []
    for i in range(0, len(tokens), 32):
        rid = lookup.get(tokens[i:i + 32])
        if rid is None:
            raise ProtocolError("PSI order: the leader's agreed order holds a patient this site did not share",
                                hint="both parties must run the intersection on the same ID lists")
        order.append(rid)
    return order
