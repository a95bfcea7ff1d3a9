"""Metering and audit: every tensor that crosses a party boundary is counted here."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Message

__all__ = ["Meter", "TransferRecord"]


@dataclass(frozen=True)
class TransferRecord:
    """One tensor that left (``sent``) or reached (``received``) a party; ``shape`` and ``dtype`` are the
    tensor's, ``bytes`` what crossed for it (fewer when ``codec`` encoded it)."""

    direction: str
    step: int
    phase: str
    src: str
    dst: str
    edge: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int  # what crossed: an encoded tensor's payload, not the tensor it stands for
    codec: str = ""


@dataclass
class _Tally:
    count: int = 0
    bytes: int = 0
    shapes: set[tuple[int, ...]] = field(default_factory=set)
    dtypes: set[str] = field(default_factory=set)
    codecs: set[str] = field(default_factory=set)


class Meter:
    """Aggregates transfers by (src, dst, edge, kind); listeners see each record (audit logs, dashboards).

    Aggregating rather than keeping every record keeps memory flat over long runs; a listener that
    needs every record (a site's append-only audit file) subscribes with ``listen``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Keyed by (src, dst, edge, kind, phase); phase is train, eval or sync (weights between replicas).
        self._sent: dict[tuple[str, str, str, str, str], _Tally] = defaultdict(_Tally)
        self._received: dict[tuple[str, str, str, str, str], _Tally] = defaultdict(_Tally)
        self._listeners: list[Callable[[TransferRecord], None]] = []

    def listen(self, callback: Callable[[TransferRecord], None]) -> None:
        self._listeners.append(callback)

    def record(self, msg: Message, direction: str) -> TransferRecord:
        tensor = msg.tensor
        rec = TransferRecord(direction=direction, step=msg.step, phase=msg.phase, src=msg.src, dst=msg.dst,
                             edge=msg.edge, kind=msg.kind.value, shape=msg.shape,
                             dtype=str(msg.dtype).removeprefix("torch."),
                             bytes=tensor.numel() * tensor.element_size(),
                             codec=msg.packed.codec if msg.packed is not None else "")
        table = self._sent if direction == "sent" else self._received
        with self._lock:
            tally = table[(rec.src, rec.dst, rec.edge, rec.kind, rec.phase)]
            tally.count += 1
            tally.bytes += rec.bytes
            tally.shapes.add(rec.shape[1:] if rec.kind in ("activation", "label") else rec.shape)
            tally.dtypes.add(rec.dtype)
            if rec.codec:
                tally.codecs.add(rec.codec)
        for callback in self._listeners:
            callback(rec)
        return rec

    def bytes_by_party(self, phase: str | None = None) -> dict[str, dict[str, int]]:
        """{party: {"sent": bytes, "received": bytes}} over every transfer (or those of one ``phase``)."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"sent": 0, "received": 0})
        with self._lock:
            for (src, _dst, _edge, _kind, ph), tally in self._sent.items():
                if phase is None or ph == phase:
                    out[src]["sent"] += tally.bytes
            for (_src, dst, _edge, _kind, ph), tally in self._received.items():
                if phase is None or ph == phase:
                    out[dst]["received"] += tally.bytes
        return {party: dict(v) for party, v in sorted(out.items())}

    def bytes_by_kind(self, phase: str | None = None) -> dict[str, int]:
        """{kind: bytes sent} over every transfer (or those of one ``phase``)."""
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for (_src, _dst, _edge, kind, ph), tally in self._sent.items():
                if phase is None or ph == phase:
                    out[kind] += tally.bytes
        return dict(out)

    def bytes_by_party_kind(self) -> dict[str, dict[str, dict[str, int]]]:
        """{party: {"sent"|"received": {kind: bytes}}}, for charts of traffic by kind over time."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        with self._lock:
            for direction, table, who in (("sent", self._sent, 0), ("received", self._received, 1)):
                for key, tally in table.items():
                    kinds = out.setdefault(key[who], {"sent": {}, "received": {}})[direction]
                    kinds[key[3]] = kinds.get(key[3], 0) + tally.bytes
        return dict(sorted(out.items()))

    def received_from(self, party: str) -> dict[str, int]:
        """{sender: bytes} that ``party`` received."""
        out: dict[str, int] = {}
        with self._lock:
            for (src, dst, _edge, _kind, _phase), tally in self._received.items():
                if dst == party:
                    out[src] = out.get(src, 0) + tally.bytes
        return out

    def flows(self) -> list[dict[str, Any]]:
        """Each transfer once: one row per (src, dst, edge, kind, phase) with its count and bytes so far.

        A meter shared by both ends (every party in one process) sees a tensor sent and received: it counts
        once. A node's meter sees what it sent and what it received.
        """
        with self._lock:
            keys = sorted(set(self._sent) | set(self._received))
            rows = []
            for key in keys:
                ends = [t for t in (self._sent.get(key), self._received.get(key)) if t is not None]
                rows.append({"src": key[0], "dst": key[1], "edge": key[2], "kind": key[3], "phase": key[4],
                             "count": max(t.count for t in ends), "bytes": max(t.bytes for t in ends)})
        return rows

    def audit(self, src: str | None = None) -> list[dict[str, Any]]:
        """Aggregated audit: one row per (src, dst, edge, kind) with count, bytes, shapes and dtypes.

        Shapes of activations and labels are per sample (the batch dimension varies). ``src`` keeps only
        what that party sent.
        """
        merged: dict[tuple[str, str, str, str], _Tally] = defaultdict(_Tally)
        with self._lock:
            for (sender, dst, edge, kind, _phase), t in self._sent.items():
                if src is not None and sender != src:
                    continue
                m = merged[(sender, dst, edge, kind)]
                m.count += t.count
                m.bytes += t.bytes
                m.shapes |= t.shapes
                m.dtypes |= t.dtypes
                m.codecs |= t.codecs
        rows = [{"src": sender, "dst": dst, "edge": edge, "kind": kind, "count": t.count, "bytes": t.bytes,
                 "shapes": sorted(list(s) for s in t.shapes), "dtypes": sorted(t.dtypes),
                 **({"codecs": sorted(t.codecs)} if t.codecs else {})}
                for (sender, dst, edge, kind), t in merged.items()]
        return sorted(rows, key=lambda r: (r["src"], r["dst"], r["edge"], r["kind"]))
