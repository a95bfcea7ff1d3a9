"""Patient alignment for vertical sites: PSI between the labels' site and each other site, over the Wire.

PSI messages are opaque bytes carried as one-dimensional uint8 tensors of kind ``psi``: declared, metered
and audited like every other tensor that crosses a party boundary. Raw IDs never cross.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import torch

from ..errors import ConfigError, ProtocolError
from ..threads import run_in_threads
from ..topology.model import Topology
from ..transport.base import Transport
from ..wire import Expect, Kind, Message, Meter, Wire
from .psi import align_follower, align_leader

__all__ = ["psi_channel", "psi_edges", "align_in_process", "psi_leader"]


def psi_leader(topology: Topology) -> str:
    """The site that leads the alignment: the one that owns labels (the first, if several do)."""
    owners = [p.name for p in topology.parties if p.data and p.labels]
    if not owners:
        raise ConfigError(f"topology '{topology.name}' has vertical sites but none owns labels",
                          hint="the labels' site leads the patient alignment; declare the labels at one site")
    return owners[0]


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
                     timeout: float = 120.0, context: bytes = b"") -> dict[str, list[str]]:
    """Run the alignment with every site on its own thread (as separate processes would).

    ``row_ids`` maps each site to its patient IDs. Returns each site's agreed order, as its own IDs.
    ``context`` names the run; nodes aligning over the network pass the same, and agree on the same order.
    """
    followers = [s for s in row_ids if s != leader]
    wire = Wire(transport, meter, psi_edges(leader, followers), timeout=timeout)
    results: dict[str, list[str]] = {}

    def run(site: str) -> None:
        if site == leader:
            peers = {f: psi_channel(wire, leader, f) for f in followers}
            results[site] = align_leader(row_ids[site], peers, context=context)
        else:
            results[site] = align_follower(row_ids[site], *psi_channel(wire, site, leader))

    run_in_threads(run, row_ids, name="medsplit-psi",
                   on_error=lambda site, exc: transport.close(f"alignment failed at '{site}': {exc}"),
                   timeout=timeout + 30)
    if len({len(v) for v in results.values()}) != 1:
        raise ProtocolError(f"alignment disagreed on the number of common patients: "
                            f"{ {s: len(v) for s, v in results.items()} }")
    return results
