"""A party in its own process: what every node holds (plan, runner, data, transport, control plane) and does.

One party, the host (the topology's first server), hosts the rendezvous store and the run store, and drives
sessions (``host.py``); every other party follows them (``member.py``). Training runs in sessions: in each,
the host connects to every party over an authenticated, encrypted pair (``admission.py``), agrees with them
where to resume (``resume.py``), and all run the same epoch loop from there (``session.py``). Every control
value travels on those pairs (``control.py``); the public store holds only rendezvous data and hints. When a
party fails, the others notice within a second or their timeout, the host opens the next session, and the
restarted party joins it: nothing done before the last common checkpoint is lost.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from ..align.channel import psi_channel, psi_edges, psi_leader
from ..align.psi import align_follower, align_leader
from ..config.experiment import Experiment
from ..data import LocalSite, SiteData
from ..engine.checks import check_site_data
from ..engine.party import PartyRunner
from ..errors import ConfigError, TransportError
from ..plan.compile import compile_topology
from ..plan.plan import Plan
from ..threads import run_in_threads
from ..transport.base import NetworkTransport
from ..transport.header import NameTable
from ..transport.local import LocalTransport
from ..transport.registry import node_transport
from ..transport.secure import Trust
from ..wire import AuditLog, Meter, Wire
from .control import ControlPlane
from .resume import PartyCheckpoints

__all__ = ["NodeOptions", "Node", "host_party"]


def void(_: object) -> None:
    """Drops a result (``run_in_threads`` runs functions that return nothing)."""


def host_party(plan: Plan) -> str:
    """The party that hosts the rendezvous and the run store: the first server of the topology."""
    servers = [p.name for p in plan.topology.parties if p.role == "server"]
    if not servers:
        raise ConfigError("a multi-process run needs a party with the role 'server' to host the rendezvous")
    return servers[0]


@dataclass
class NodeOptions:
    """How to run one party. ``trust``: this party's identity and what it requires of each peer (the host: of
    every member; a member: of the host, its pinned key and/or shared secret). ``rpc_off_loopback`` lets the
    rpc transport (no authentication, unpickles) use a non-loopback address, inside one trust domain.

    ``site`` is a site's own data (None for servers and relays). With ``predict_out`` the node predicts
    with the run's last checkpoints instead of training; a site that owns a task's labels writes that
    task's predictions there.
    """

    experiment: Experiment
    party: str
    run_dir: Path
    host: str = "127.0.0.1"
    port: int = 29500
    transport: str = "gloo"
    trust: Trust = field(default_factory=Trust)
    rpc_off_loopback: bool = False
    site: LocalSite | None = None
    out: TextIO | None = None
    fresh: bool = False  # ignore existing checkpoints (a new run in an old directory)
    predict_out: Path | None = None

    @property
    def mode(self) -> str:
        return "train" if self.predict_out is None else "predict"


class Node:
    """One party's process. ``run()`` returns the run summary on the host, None elsewhere."""

    def __init__(self, opts: NodeOptions) -> None:
        self.opts = opts
        self.exp = opts.experiment
        self.out = opts.out or sys.stdout
        self.topology = self.exp.build_topology()
        self.plan = compile_topology(self.topology)
        self.me = opts.party
        if self.me not in self.plan.parties:
            raise ConfigError(f"party '{self.me}' is not in experiment '{self.exp.name}'",
                              hint=f"its parties are: {', '.join(self.plan.parties)}")
        self.host = host_party(self.plan)
        self.is_host = self.me == self.host
        self.digest = self.exp.digest()
        # The run's name in the store: the digest is not part of it, so that a party with another version of
        # the experiment meets the host and is refused, with the reason, instead of waiting in a run of its own.
        self.run_id = self.exp.name
        self.run_dir = Path(opts.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = PartyCheckpoints(self.run_dir, self.me, self.digest)
        self.align_file = self.run_dir / "aligned_order.json"  # patient IDs: stays at this site, never sent
        if opts.fresh and opts.mode == "train":
            self.checkpoints.clear()
            self.align_file.unlink(missing_ok=True)
        self.meter = Meter()
        lr = self.exp.training.lr
        unconnected = LocalTransport()
        unconnected.close("this node has not connected yet")
        self.runner = PartyRunner(self.me, self.plan, wire=Wire(unconnected, self.meter, set()),
                                  optimizer=lambda params: torch.optim.Adam(params, lr=lr))
        self.is_site = bool(self.plan.parties[self.me].data)
        self.vertical = self.topology.schedule == "joint" and len(self.topology.sites) > 1
        self.site = opts.site
        self.data: SiteData | None = None
        self.aligned: int | None = None
        self.fingerprint_key: bytes | None = None
        if self.is_site:
            self._check_site()
            self.meter.listen(AuditLog(self.run_dir / "audit.jsonl", self.me))
        self._transport: NetworkTransport | None = None
        self._control: ControlPlane | None = None
        self.session = 0
        self.training = False  # between connecting this session's channels and its end
        self.connected_once = False
        self.answered: dict[str, str] = {}  # the host: the last knock it answered, per member
        self.active: list[str] = list(self.plan.parties)  # the parties of the current session

    # --- common pieces -------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        print(f"[{self.me}] {message}", file=self.out, flush=True)

    @property
    def transport(self) -> NetworkTransport:
        if self._transport is None:
            raise TransportError(f"party '{self.me}' has no transport yet", hint="open_transport() first")
        return self._transport

    @property
    def control(self) -> ControlPlane:
        if self._control is None:
            raise TransportError(f"party '{self.me}' has no control plane yet", hint="open_transport() first")
        return self._control

    def open_transport(self) -> None:
        allowed = set(self.plan.allowed())
        if self.vertical:
            leader = psi_leader(self.topology)
            allowed |= psi_edges(leader, [s for s in self.topology.sites if s != leader])
        names = NameTable(list(self.plan.parties) + [p for a in allowed for p in a[2:]], [a[0] for a in allowed],
                          self.plan.codec_names())
        self._transport = node_transport(self.opts.transport, party=self.me, peers=self.peers(), names=names,
                                         host=self.opts.host, port=self.opts.port, is_host=self.is_host,
                                         run_id=self.run_id, timeout=self.exp.training.timeout, trust=self.opts.trust,
                                         digest=self.digest, hub=self.host, allow_remote=self.opts.rpc_off_loopback)
        self._control = ControlPlane(self._transport, self.run_id, self.me)

    def peers(self) -> list[str]:
        return self.peers_of(self.me)

    def peers_of(self, party: str) -> list[str]:
        """Who ``party`` has a connection to: the host has one to every party (control values travel on it);
        a member to the host and to the parties it exchanges tensors with."""
        if party == self.host:
            return sorted(p for p in self.plan.parties if p != party)
        peers = set(self.plan.peers(party)) | {self.host}
        if self.vertical and party in self.topology.sites:
            peers |= {s for s in self.topology.sites if s != party}
        return sorted(peers - {party})

    def member_peers(self, party: str) -> list[str]:
        """The peers of member ``party`` other than the host: pairs the host introduces each session."""
        return [p for p in self.peers_of(party) if p != self.host]

    def lost_peers(self) -> list[str]:
        if self._transport is None or not self.connected_once:
            return []
        connected = set(self._transport.connected)
        return [p for p in self.peers() if p in self.active and p not in connected]

    def connect_members(self, keys: dict[str, str]) -> None:
        """A member connects to the session's other members it talks to, with the pair keys the host handed it
        over their authenticated connection (``keys``: peer -> hex)."""
        if not self.transport.rejoin:
            return  # a static group (rpc) was joined whole
        peers = [p for p in self.member_peers(self.me) if p in self.active]
        for p in peers:
            if p not in keys:
                raise TransportError(f"the server handed party '{self.me}' no key for its connection to '{p}'")
            self.opts.trust.introduce(p, bytes.fromhex(keys[p]))
        # In parallel: two parties that both wait on a third must not wait on each other first.
        run_in_threads(lambda p: void(self.transport.reconnect(p)), peers, name=f"medsplit-{self.me}-connect",
                       timeout=2 * self.exp.training.timeout + 30)

    def wire(self, abort: bool = True) -> Wire:
        return Wire(self.transport, self.meter, self.plan.allowed(), timeout=self.exp.training.timeout,
                    abort=self.aborted if abort else None, codecs=self.plan.codecs)

    def aborted(self) -> str | None:
        """Why this node should stop waiting (the run moved on), or None."""
        if self._control is None:
            return None
        if self.is_host:
            lost = self.lost_peers() if self.training else []
            return f"lost the connection to {lost}" if lost else None
        if self.host not in self.transport.connected:
            return "the connection to the server ended (it started a new session, or stopped)"
        return None

    # --- a site's data ---------------------------------------------------------------------------------

    @property
    def local_site(self) -> LocalSite:
        if self.site is None:
            raise ConfigError(f"site party '{self.me}' needs its site data (the site YAML, --config)")
        return self.site

    def _check_site(self) -> None:
        counts = self.local_site.counts
        self.log(f"data: {counts['found']} found, {counts['loaded']} loaded, {counts['rejected']} rejected; "
                 f"shapes {dict(self.local_site.shapes)}")
        check_site_data(self.plan, self.me, self.local_site.holding(), declared=self.exp.declared(),
                        require_labels=self.opts.mode == "train")

    def site_rows(self) -> list[int]:
        """This site's train and validation row counts, opening (and aligning) its data the first time."""
        if self.data is None:
            party = self.plan.parties[self.me]
            keys = tuple(party.data) + tuple(party.labels)
            order = self._align() if self.vertical else None
            self.data = self.local_site.open(keys, order, every_row=self.opts.mode == "predict")
        return [len(self.data.train), len(self.data.val)]

    def _align(self) -> list[str]:
        """Vertical sites: PSI with the labels' site over the transport (once; the order is kept on disk)."""
        if self.align_file.exists():
            order: list[str] = json.loads(self.align_file.read_text())
        else:
            leader = psi_leader(self.topology)
            followers = [s for s in self.topology.sites if s != leader]
            wire = Wire(self.transport, self.meter, psi_edges(leader, followers), timeout=self.exp.training.timeout)
            if self.me == leader:
                order = align_leader(self.local_site.row_ids, {f: psi_channel(wire, leader, f) for f in followers},
                                     context=self.exp.alignment_context())
            else:
                order = align_follower(self.local_site.row_ids, *psi_channel(wire, self.me, leader))
            self.align_file.write_text(json.dumps(order))
        # Shared by the data sites (they all hold these IDs), unknown to the server that compares.
        self.fingerprint_key = hashlib.sha256(b"medsplit-fingerprint|" + "\0".join(order).encode()).digest()
        self.aligned = len(order)
        return order

