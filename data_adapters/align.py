"""Patient alignment for vertical sites: PSI between the labels' site and each other site, over the Wire.

PSI messages are opaque bytes carried as one-dimensional uint8 tensors of kind ``psi``: declared, metered
and audited like every other tensor that crosses a party boundary. Raw IDs never cross.
"""

from __future__ import annotations

import itertools
from typing import Callable, Mapping, Sequence

import torch

from medsplit.errors import MedsplitError
from medsplit.meter import Meter
from medsplit.threads import run_in_threads
from medsplit.transport.base import Transport
from medsplit.wire import Expect, Kind, Message, Wire

from .psi import align_follower, align_leader

__all__ = ["psi_channel", "psi_edges", "align_in_process"]


def psi_edges(leader: str, followers: Sequence[str]) -> set[tuple[str, Kind, str, str]]:
    """What alignment may send: PSI bytes between the labels' site and each other site, both ways."""
    out = set()
    for f in followers:
        out.add((f"psi:{leader}->{f}", Kind.PSI, leader, f))
        out.add((f"psi:{f}->{leader}", Kind.PSI, f, leader))
    return out


def psi_channel(wire: Wire, me: str, peer: str) -> tuple[Callable[[bytes], None], Callable[[], bytes]]:
    """``send(bytes)`` and ``recv() -> bytes`` between two parties, numbered so that no message is skipped."""
    sent, received = itertools.count(1), itertools.count(1)

    def send(data: bytes) -> None:
        tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
        wire.send(Message(next(sent), f"psi:{me}->{peer}", Kind.PSI, me, peer, tensor, phase="align"))

    def recv() -> bytes:
        expect = Expect(next(received), f"psi:{peer}->{me}", Kind.PSI, peer, me, None, torch.uint8, phase="align")
        return bytes(wire.recv(expect).numpy().tobytes())

    return send, recv


def align_in_process(row_ids: Mapping[str, Sequence[str]], leader: str, transport: Transport, meter: Meter,
                     timeout: float = 120.0, order_key: bytes | None = None) -> dict[str, list[str]]:
    """Run the alignment with every site on its own thread (as separate processes would).

    ``row_ids`` maps each site to its patient IDs. Returns each site's agreed order, as its own IDs.
    ``order_key`` fixes the agreed order (reproducible demos); by default the leader draws a random one.
    """
    followers = [s for s in row_ids if s != leader]
    wire = Wire(transport, meter, psi_edges(leader, followers), timeout=timeout)
    results: dict[str, list[str]] = {}

    def run(site: str) -> None:
        if site == leader:
            peers = {f: psi_channel(wire, leader, f) for f in followers}
            results[site] = align_leader(row_ids[site], peers, key=order_key)
        else:
            results[site] = align_follower(row_ids[site], *psi_channel(wire, site, leader))

    run_in_threads(run, row_ids, name="medsplit-psi",
                   on_error=lambda site, exc: transport.close(f"alignment failed at '{site}': {exc}"))
    if len({len(v) for v in results.values()}) != 1:
        raise MedsplitError(f"alignment disagreed on the number of common patients: "
                            f"{ {s: len(v) for s, v in results.items()} }")
    return results
