"""The one registry of transports: what each is for, and how the Python API, the nodes and the CLI make one."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, MedsplitError
from ..suggest import did_you_mean
from ..threads import run_in_threads
from .base import NetworkTransport, Transport
from .group import PartyGroup
from .header import NameTable
from .local import LocalTransport
from .secure import Trust

if TYPE_CHECKING:
    from ..plan.plan import Plan

__all__ = ["TransportSpec", "TRANSPORTS", "transport_spec", "transport_names", "node_transport",
           "in_process_transport"]

NodeFactory = Callable[..., NetworkTransport]


def _gloo(**kwargs: object) -> NetworkTransport:
    from .gloo import GlooTransport

    kwargs.pop("allow_remote", None)  # gloo authenticates and encrypts: any address will do
    return GlooTransport(**kwargs)  # type: ignore[arg-type]


def _rpc(**kwargs: object) -> NetworkTransport:
    from .rpc import RpcTransport

    return RpcTransport(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TransportSpec:
    """A transport by name. ``node`` makes one party's end of it in a process of its own (None: in-process
    only); ``one_process`` says whether every party of a run can share one process over it."""

    name: str
    summary: str
    node: NodeFactory | None
    one_process: bool


TRANSPORTS: dict[str, TransportSpec] = {spec.name: spec for spec in (
    TransportSpec("local", "every party in this process; tensors pass through in-memory queues", None, True),
    TransportSpec("gloo", "torch.distributed gloo, a 2-rank group per pair of parties; mutually authenticated and "
                          "encrypted (AES-256-GCM); tensors only, nothing unpickled; parties can restart and rejoin",
                  _gloo, True),
    TransportSpec("rpc", "torch.distributed.rpc over TensorPipe; unpickles what peers send and has no encryption, "
                         "so only for parties inside one trust domain (loopback unless allowed); the group is static",
                  _rpc, False),
)}


def transport_spec(name: str) -> TransportSpec:
    if name not in TRANSPORTS:
        raise ConfigError(f"unknown transport '{name}'{did_you_mean(name, TRANSPORTS)}",
                          hint=f"choose one of: {', '.join(TRANSPORTS)}")
    return TRANSPORTS[name]


def transport_names(*, between_processes: bool | None = None) -> list[str]:
    """Registered transports; ``between_processes=True`` keeps those a node can use."""
    return [n for n, s in TRANSPORTS.items() if between_processes is None or (s.node is not None) == between_processes]


def node_transport(name: str, *, party: str, peers: Sequence[str], names: NameTable, host: str, port: int,
                   is_host: bool, run_id: str, timeout: float, trust: Trust, digest: str = "",
                   hub: str | None = None, allow_remote: bool = False) -> NetworkTransport:
    """One party's end of a transport between processes.

    ``trust``: this party's identity and what it requires of each peer (``secure.Trust``); ``digest``: the
    experiment's, compared in every handshake; ``hub``: the host party; ``allow_remote``: rpc off loopback.
    """
    spec = transport_spec(name)
    if spec.node is None:
        raise ConfigError(f"transport '{name}' keeps every party in one process; a node cannot use it",
                          hint=f"use one of: {', '.join(transport_names(between_processes=True))}")
    return spec.node(party=party, peers=list(peers), names=names, host=host, port=port, is_host=is_host,
                     run_id=run_id, timeout=timeout, trust=trust, digest=digest, hub=hub, allow_remote=allow_remote)


def in_process_transport(name: str, plan: Plan, *, timeout: float = 60.0) -> Transport:
    """A transport that holds every party of ``plan`` in this process (for ``SplitTrainer``).

    Over gloo each party gets its own end, connected to its peers through real sockets on 127.0.0.1, each with
    a fresh identity that the others know (made here, for this transport only).
    """
    spec = transport_spec(name)
    if not spec.one_process:
        raise ConfigError(f"transport '{name}' runs one party per process, so it cannot hold a whole topology in "
                          "this one", hint="run the parties as processes: `medsplit run EXP.yaml --transport "
                                           f"{name}`, or use "
                                           f"{' or '.join(n for n, s in TRANSPORTS.items() if s.one_process)} here")
    if spec.node is None:
        return LocalTransport(copy_on_send=False)  # the engine never edits a sent tensor
    parties = list(plan.parties)
    servers = [p.name for p in plan.topology.parties if p.role == "server"]
    host = servers[0] if servers else parties[0]
    names, run_id = NameTable.from_plan(plan), f"in-process-{uuid.uuid4().hex[:12]}"
    trust = Trust.ephemeral(parties)
    ends: dict[str, NetworkTransport] = {}
    try:
        ends[host] = node_transport(name, party=host, peers=plan.peers(host), names=names, host="127.0.0.1", port=0,
                                    is_host=True, run_id=run_id, timeout=timeout, trust=trust[host], hub=host)
        for p in parties:
            if p != host:
                ends[p] = node_transport(name, party=p, peers=plan.peers(p), names=names, host="127.0.0.1",
                                         port=ends[host].port, is_host=False, run_id=run_id, timeout=timeout,
                                         trust=trust[p], hub=host)
        run_in_threads(lambda p: ends[p].connect(), parties, name="medsplit-connect", timeout=timeout + 30)
    except MedsplitError:
        for end in ends.values():
            end.close("could not connect every party")
        raise
    return PartyGroup(ends, name)
