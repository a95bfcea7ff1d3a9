"""A party in its own process: what every node holds (plan, runner, data, transport, control plane) and does.

One party, the host (the topology's first server), hosts the rendezvous store, the control plane and the
run store, and drives sessions (``host.py``); every other party follows them (``member.py``). Training runs
in sessions: in each, the host admits every party (``handshake.py``), agrees with them where to resume
(``resume.py``), and all run the same epoch loop from there (``session.py``). When a party fails, the
others notice within a second or their timeout, the host opens the next session, and the restarted party
joins it: nothing done before the last common checkpoint is lost.
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
from ..engine.party import PartyRunner
from ..errors import ConfigError, DataError, TransportError
from ..plan.compile import compile_topology
from ..plan.plan import Plan
from ..threads import run_in_threads
from ..transport.base import NetworkTransport
from ..transport.header import NameTable
from ..transport.local import LocalTransport
from ..transport.registry import node_transport
from ..wire import AuditLog, Meter, Wire
from .auth import Credentials
from .control import ControlPlane
from .resume import PartyCheckpoints

__all__ = ["NodeOptions", "Node", "host_party"]


def host_party(plan: Plan) -> str:
    """The party that hosts the rendezvous and the run store: the first server of the topology."""
    servers = [p.name for p in plan.topology.parties if p.role == "server"]
    if not servers:
        raise ConfigError("a multi-process run needs a party with the role 'server' to host the rendezvous")
    return servers[0]


@dataclass
class NodeOptions:
    """How to run one party. ``credentials`` prove who a non-host party is; the host gets ``members``.

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
    credentials: Credentials | None = None
    members: dict[str, Credentials] = field(default_factory=dict)
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
        self.run_id = f"{self.exp.name}-{self.digest}"
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
                                         run_id=self.run_id, timeout=self.exp.training.timeout)
        self._control = ControlPlane(self._transport, self.run_id)

    def peers(self) -> list[str]:
        peers = set(self.plan.peers(self.me))
        if self.vertical and self.is_site:
            peers |= {s for s in self.topology.sites if s != self.me}
        return sorted(peers)

    def lost_peers(self) -> list[str]:
        if self._transport is None or not self.connected_once:
            return []
        connected = set(self._transport.connected)
        return [p for p in self.peers() if p in self.active and p not in connected]

    def connect(self, first: bool) -> None:
        peers = [p for p in self.peers() if p in self.active]
        if first or not self.transport.rejoin:
            self.transport.connect(peers if self.transport.rejoin else None)
        else:  # in parallel: two parties that both wait on a third must not wait on each other first
            run_in_threads(self.transport.reconnect, peers, name=f"medsplit-{self.me}-reconnect",
                           timeout=self.exp.training.timeout + 30)
        self.connected_once = True

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
        try:
            current = self._control.get("session")
        except TransportError:
            return "the server's rendezvous store is gone"
        if current is not None and current["session"] != self.session:
            return f"the server started session {current['session']} (a party failed)"
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
        for key, shape in self.plan.parties[self.me].data.items():
            got = self.local_site.shapes.get(key)
            if got is None or tuple(got) != tuple(shape):
                raise DataError(f"site '{self.me}' data '{key}' has shape {got}, but experiment "
                                f"'{self.exp.name}' declares {tuple(shape)}",
                                hint="make the experiment's modalities match the site's pipeline")

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

