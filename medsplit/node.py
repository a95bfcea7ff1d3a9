"""A party in its own process: authenticate, agree where to resume, train its part of every step, recover.

One party, the host (the topology's first server), hosts the rendezvous store, the control plane and
the run store. Training runs in *sessions*: in each, the host challenges every other party, collects
the checkpoints each has, publishes the step to resume from (the newest one every party has), and all
train from there. When a party fails (a crash, a dead link, a peer that sent what the plan does not
expect) the others notice within a second or their timeout, the host opens the next session, and the
restarted party joins it: nothing done before the last common checkpoint is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from .auth import Credentials, answer, verify
from .checkpoint import checkpoint_steps, load_checkpoint, save_checkpoint
from .control import StoreControl, wait_json
from .engine import merge_eval, merge_train_loss
from .errors import AuthenticationError, ConfigError, MedsplitError, PeerTimeout, ProtocolError, TransportError
from .experiment import Experiment
from .fingerprint import batch_fingerprint
from .meter import Meter
from .party import FINGERPRINT_KEY, PartyRunner
from .plan import Plan, compile_topology
from .runstore import RunStore
from .schedule import Schedule, UnitSpec
from .threads import run_in_threads
from .wire import Wire

__all__ = ["NodeOptions", "Node", "host_party", "experiment_digest"]

_RECOVERABLE = (TransportError, PeerTimeout, ProtocolError)
MAX_RETRIES = 5  # sessions in a row that fail before reaching a new checkpoint: then the run fails


def host_party(plan: Plan) -> str:
    """The party that hosts the rendezvous and the run store: the first server of the topology."""
    servers = [p.name for p in plan.topology.parties if p.role == "server"]
    if not servers:
        raise ConfigError("a multi-process run needs a party with the role 'server' to host the rendezvous")
    return servers[0]


def experiment_digest(exp: Experiment) -> str:
    """What every party must agree on before training together: topology, training and sites (not paths)."""
    t, tr = exp.topology, exp.training
    spec = {"name": exp.name, "seed": exp.seed, "topology": t.__dict__, "training": tr.__dict__,
            "sites": [(s.name, s.party, {k: list(v) for k, v in s.shapes.items()}, list(s.labels))
                      for s in exp.sites]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class NodeOptions:
    """How to run one party. ``credentials`` prove who a non-host party is; the host gets ``members``."""

    experiment: Experiment
    party: str
    run_dir: Path
    host: str = "127.0.0.1"
    port: int = 29500
    transport: str = "gloo"
    credentials: Credentials | None = None
    members: dict[str, Credentials] = field(default_factory=dict)
    site_config: Path | None = None
    out: TextIO | None = None
    fresh: bool = False  # ignore existing checkpoints (a new run in an old directory)


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
        self.run_id = f"{self.exp.name}-{experiment_digest(self.exp)}"
        self.run_dir = Path(opts.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.run_dir / "checkpoints" / self.me
        if opts.fresh:  # a new run in an old directory: forget the old run's checkpoints and alignment
            for step in checkpoint_steps(self.ckpt_dir):
                (self.ckpt_dir / f"step-{step:09d}.pt").unlink()
            for name in ("epoch_ends.json", "aligned_order.json"):
                (self.run_dir / name).unlink(missing_ok=True)
        self.meter = Meter()
        lr = self.exp.training.lr
        self.runner = PartyRunner(self.me, self.plan, wire=None,  # type: ignore[arg-type]
                                  optimizer=lambda params: torch.optim.Adam(params, lr=lr))
        self.is_site = bool(self.plan.parties[self.me].data)
        self.vertical = self.topology.schedule == "joint" and len(self.topology.sites) > 1
        self.data = None
        self.fingerprint_key = b""
        if self.is_site:
            self._open_data()
            from .auditlog import AuditLog

            self.meter.listen(AuditLog(self.run_dir / "audit.jsonl", self.me))
        self.transport = None
        self.control = None
        self.session = 0
        self._training = False  # between connecting this session's channels and its end
        self.active: list[str] = list(self.plan.parties)  # the parties of the current session

    # --- data ----------------------------------------------------------------------------------------

    def _open_data(self) -> None:
        from data_adapters.config import load_site_config
        from data_adapters.site_data import open_site_data

        if self.opts.site_config is None:
            raise ConfigError(f"site party '{self.me}' needs its site YAML (--config)")
        cfg = load_site_config(self.opts.site_config)
        self.site_data, report = open_site_data(cfg)
        # Counts only: what the server may print about this site's data.
        self.report_counts = {"found": report.found, "loaded": report.loaded, "rejected": len(report.rejected)}
        print(f"[{self.me}] data: {report.found} found, {report.loaded} loaded, {len(report.rejected)} rejected; "
              f"shapes {dict(self.site_data.shapes)}", file=self.out, flush=True)
        declared = self.plan.parties[self.me].data
        for key, shape in declared.items():
            got = self.site_data.shapes.get(key)
            if got is None or tuple(got) != tuple(shape):
                raise ConfigError(f"site '{self.me}' data '{key}' has shape {got}, but experiment "
                                  f"'{self.exp.name}' declares {tuple(shape)}",
                                  hint="make the experiment's modalities match the site's pipeline")
        if not self.vertical:
            self._set_splits(self.site_data.train, self.site_data.val)

    def _set_splits(self, train, val) -> None:
        from data_adapters.batches import DatasetSource

        party = self.plan.parties[self.me]
        keys = tuple(party.data) + tuple(party.labels)
        self.data = {"train": DatasetSource(train, keys), "val": DatasetSource(val, keys)}

    def _align(self) -> None:
        """Vertical sites: PSI with the labels' site over the transport (once; the order is kept on disk)."""
        from data_adapters.align import psi_channel, psi_edges
        from data_adapters.psi import align_follower, align_leader

        cache = self.run_dir / "aligned_order.json"  # patient IDs: stays at this site, never sent
        if cache.exists():
            order = json.loads(cache.read_text())
        else:
            sites = self.topology.sites
            leader = next(p.name for p in self.topology.parties if p.data and p.labels)
            followers = [s for s in sites if s != leader]
            wire = Wire(self.transport, self.meter, psi_edges(leader, followers), timeout=self.exp.training.timeout)
            if self.me == leader:
                order = align_leader(self.site_data.row_ids, {f: psi_channel(wire, leader, f) for f in followers})
            else:
                order = align_follower(self.site_data.row_ids, *psi_channel(wire, self.me, leader))
            cache.write_text(json.dumps(order))
        # Shared by the data sites (they all hold these IDs), unknown to the server that compares.
        self.fingerprint_key = hashlib.sha256(b"medsplit-fingerprint|" + "\0".join(order).encode()).digest()
        self.site_data.align_ids = order
        self._set_splits(*self.site_data.align(order))

    def rows(self) -> list[int]:
        return [len(self.data["train"]), len(self.data["val"])]

    # --- transport and control -------------------------------------------------------------------------

    def _peers(self) -> list[str]:
        peers = set()
        for _edge, _kind, src, dst in self.plan.allowed():
            if self.me in (src, dst):
                peers.add(dst if src == self.me else src)
        if self.vertical and self.is_site:
            peers |= {s for s in self.topology.sites if s != self.me}
        return sorted(peers)

    def _make_transport(self):
        from .transport.header import NameTable

        allowed = set(self.plan.allowed())
        if self.vertical:
            from data_adapters.align import psi_edges

            leader = next(p.name for p in self.topology.parties if p.data and p.labels)
            allowed |= psi_edges(leader, [s for s in self.topology.sites if s != leader])
        names = NameTable(list(self.plan.parties) + [p for a in allowed for p in a[2:]], [a[0] for a in allowed])
        kwargs = dict(party=self.me, peers=self._peers(), names=names, host=self.opts.host, port=self.opts.port,
                      is_host=self.is_host, run_id=self.run_id, timeout=self.exp.training.timeout)
        if self.opts.transport == "gloo":
            from .transport.gloo import GlooTransport

            return GlooTransport(**kwargs, copy_on_send=False)  # the engine never edits a tensor it sent
        if self.opts.transport == "rpc":
            from .transport.rpc import RpcTransport

            return RpcTransport(**kwargs)
        raise ConfigError(f"unknown transport '{self.opts.transport}' for a node", hint="use gloo or rpc")

    def _control(self) -> StoreControl:
        return StoreControl(self.transport.store)

    def _key(self, *parts: Any) -> str:
        return "/".join([self.run_id, *map(str, parts)])

    def _set(self, value: Any, *key: Any) -> None:
        self._control().set(self._key(*key), json.dumps(value))

    def _wait(self, timeout: float, awaiting: str, *key: Any) -> Any:
        return wait_json(self._control(), self._key(*key), timeout, awaiting, abort=self._aborted)

    def _aborted(self) -> str | None:
        if self.control is None:
            return None
        if self.is_host:
            lost = self._lost_peers() if self._training else []
            return f"lost the connection to {lost}" if lost else None
        try:
            current = self._control().get(self._key("session"))
        except Exception:  # the host's store went away: the host died
            return "the server's rendezvous store is gone"
        if current is not None and json.loads(current)["session"] != self.session:
            return f"the server started session {json.loads(current)['session']} (a party failed)"
        return None

    # --- the run -------------------------------------------------------------------------------------

    def run(self) -> dict | None:
        return self._run_host() if self.is_host else self._run_member()

    def _log(self, message: str) -> None:
        print(f"[{self.me}] {message}", file=self.out, flush=True)

    def _run_host(self) -> dict:
        state_file = self.run_dir / "session.json"
        self.session = json.loads(state_file.read_text())["session"] if state_file.exists() else 0
        self.transport = self._make_transport()
        self.control = self._control()
        self.store = RunStore(self.run_dir)
        self.store.set_info(name=self.exp.name, preset=self.exp.topology.preset, transport=self.opts.transport,
                            seed=self.exp.seed, epochs=self.exp.training.epochs, status="running",
                            started=time.time(), parties=list(self.plan.parties), topology=self.plan.describe(),
                            experiment=str(self.exp.path), nopeek=self.exp.topology.nopeek)
        self._log(f"hosting run '{self.run_id}' on {self.opts.host}:{self.transport.port}")
        members = [p for p in self.plan.parties if p != self.me]
        failures, last_resume, seen, previous = 0, None, set(), None
        first = True
        while True:
            self.session += 1
            state_file.write_text(json.dumps({"session": self.session}))
            self._set({"session": self.session, "digest": experiment_digest(self.exp)}, "session")
            ready = self._admit(members)
            admitted = sorted(ready)
            for p in admitted:
                self.store.log_event(p, "resumed" if p in seen else "connected")
            for p in sorted(set(members) - set(admitted)):
                self.store.log_event(p, "down", "did not rejoin; the run goes on with the other sites")
                self._log(f"site '{p}' is down: continuing with {[s for s in admitted if s in self.topology.sites]}")
            seen |= set(admitted)
            self.active = [self.me] + admitted
            resume, load = self._resume_point(ready, previous)
            previous = set(self.active)
            if resume is not None and resume == last_resume:
                failures += 1
            else:
                failures = 0
            if failures >= MAX_RETRIES:
                raise MedsplitError(f"the run failed {failures} times in a row from step {resume}",
                                    hint="see the parties' logs for the error; fix it and restart the server")
            last_resume = resume
            # Every party takes its place in the schedule from the host's checkpoint: one truth for where we are.
            meta = self._load_own(resume)["meta"] if resume is not None else None
            self._set({"resume": resume, "meta": meta, "active": self.active, "load": load}, self.session, "start")
            try:
                self._connect(first)
                first = False
                rows = self._gather_rows(members)
                for p in self.active:
                    self.store.log_event(p, "training", f"session {self.session}, from step {resume or 0}")
                summary = self._train(resume, meta, rows)
            except _RECOVERABLE as exc:
                self._log(f"session {self.session} stopped: {exc}")
                for p in self._lost_peers():
                    self.store.log_event(p, "down", str(exc)[:500])
                continue
            summary = {**summary, "preset": self.exp.topology.preset, "transport": self.opts.transport,
                       "seed": self.exp.seed, "epochs": self.exp.training.epochs, "status": "completed",
                       "name": self.exp.name}
            self._set({"summary": "completed"}, "done")
            for p in self.plan.parties:
                self.store.log_event(p, "finished")
            self.store.set_info(status="completed", ended=time.time())
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            try:
                self.transport.flush()
            except TransportError as exc:  # a peer that left the run earlier; the others have everything
                self._log(f"at the end: {exc.message}")
            time.sleep(0.5)  # let members read "done" before the store goes away
            self.transport.close()
            return summary

    def _lost_peers(self) -> list[str]:
        if not hasattr(self.transport, "connected") or not getattr(self, "_connected_once", False):
            return []
        connected = set(self.transport.connected)
        return [p for p in self._peers() if p in self.active and p not in connected]

    def _admit(self, members: list[str]) -> dict[str, dict]:
        """Challenge every member; refuse (and log on both sides) any that cannot prove who it is.

        Every party is awaited up to ``training.rejoin_timeout``; in horizontal and SplitFed runs, sites that
        have not come after ``training.timeout`` are left out of this session (the run goes on without them).
        """
        ready: dict[str, dict] = {}
        tr = self.exp.training
        deadline = time.monotonic() + tr.rejoin_timeout
        optional_after = time.monotonic() + min(tr.timeout, tr.rejoin_timeout)
        optional = set(self.topology.sites) if self.topology.schedule != "joint" else set()
        pending = set(members)
        nonces: dict[str, bytes] = {}
        while pending:
            now = time.monotonic()
            if now > optional_after and pending <= optional and set(ready) & optional:
                return ready  # the missing sites are down: go on with the others
            if now > deadline:
                raise MedsplitError(f"parties {sorted(pending)} did not join within {tr.rejoin_timeout:.0f} s",
                                    hint="start them (medsplit site --config SITE.yaml); the rejoin wait is "
                                         "training.rejoin_timeout in the experiment")
            for p in sorted(pending):
                hello = self.control.get(self._key(self.session, "hello", p))
                if hello is None:
                    continue
                hello = json.loads(hello)
                if p not in nonces:
                    if hello.get("digest") != experiment_digest(self.exp):
                        self._refuse(p, "its experiment differs from the server's (topology, training or sites)")
                        pending.discard(p)
                        continue
                    nonces[p] = secrets.token_bytes(32)
                    self._set({"nonce": nonces[p].hex()}, self.session, "challenge", p)
                    continue
                response = self.control.get(self._key(self.session, "response", p))
                if response is None:
                    continue
                creds = self.opts.members.get(p)
                ok = creds is not None and verify(creds, self.run_id, p, nonces[p],
                                                  bytes.fromhex(json.loads(response)["answer"]))
                if not ok:
                    self._refuse(p, "its answer to the challenge does not match the credentials the experiment "
                                    "lists for it")
                    pending.discard(p)
                    continue
                self._set({"verdict": "ok"}, self.session, "verdict", p)
                ready[p] = self._wait(max(deadline - time.monotonic(), 1.0), f"party '{p}' to report its checkpoints",
                                      self.session, "ready", p)
                data = ready[p].get("data")
                counts = f"; data: {data['found']} found, {data['loaded']} loaded, {data['rejected']} rejected" \
                    if data else ""
                self._log(f"party '{p}' authenticated ({creds.describe()}){counts}")
                pending.discard(p)
            time.sleep(0.05)
        refused = [p for p in members if p not in ready and p not in optional]
        if refused:
            raise AuthenticationError(f"parties {refused} were refused; no tensor was exchanged with them",
                                      hint="check their credentials (secret or key) and that they run the same "
                                           "experiment file as the server")
        return ready

    def _refuse(self, party: str, why: str) -> None:
        self._set({"verdict": f"refused: {why}"}, self.session, "verdict", party)
        self.store.log_event(party, "refused", why)
        self._log(f"refused party '{party}': {why}")

    def _resume_point(self, ready: dict[str, dict], previous: set[str] | None) -> tuple[int | None, dict]:
        """The step to resume from, and which of its own checkpoints each party loads.

        The server, relays and (vertical) every site must all have that exact step. A horizontal site may
        have missed it (it was down): it loads its newest checkpoint up to that step, and the client weights
        reach it by hand-off or averaging before its next turn. When the set of parties changes, the
        schedule changes with it, so only a checkpoint at an epoch's end will do.
        """
        changed = previous is not None and previous != set(self.active)
        replicas = set(self.topology.sites) if self.topology.schedule != "joint" else set()
        exact = [p for p in ready if p not in replicas]
        common = set(self._epoch_ends() if changed else checkpoint_steps(self.ckpt_dir))
        for p in exact:
            common &= set(ready[p]["epoch_ends"] if changed else ready[p]["checkpoints"])
        resume = max(common) if common else None
        load = {self.me: resume}
        for p, info in ready.items():
            older = [s for s in info["checkpoints"] if resume is not None and s <= resume]
            load[p] = resume if p in exact else (max(older) if older else None)
        return resume, load

    def _epoch_ends(self) -> list[int]:
        path = self.run_dir / "epoch_ends.json"
        steps = set(checkpoint_steps(self.ckpt_dir))
        return sorted(s for s in (json.loads(path.read_text()) if path.exists() else []) if s in steps)

    def _connect(self, first: bool) -> None:
        peers = [p for p in self._peers() if p in self.active]
        if first:
            if self.opts.transport == "rpc":  # a static group: every listed party, once
                self.transport.connect()
            else:
                self.transport.connect(peers)
        else:  # in parallel: two parties that both wait on a third must not wait on each other first
            run_in_threads(self.transport.reconnect, peers, name=f"medsplit-{self.me}-reconnect")
        self._connected_once = True

    def _gather_rows(self, members: list[str]) -> dict[str, list[int]]:
        if self.is_host:
            posted = {s: self._wait(self.exp.training.timeout, f"site '{s}' to report its rows",
                                    self.session, "rows", s) for s in self.topology.sites if s in self.active}
            aligned = {p["aligned"] for p in posted.values() if p["aligned"] is not None}
            if aligned and self.session == 1:
                self._log(f"aligned by private set intersection: {min(aligned)} common patients")
            rows = {s: p["rows"] for s, p in posted.items()}
            self._set(rows, self.session, "rows")
            return rows
        if self.is_site:
            if self.vertical and self.data is None:
                self._align()
            self._set({"rows": self.rows(), "aligned": len(self.site_data.align_ids) if self.vertical else None},
                      self.session, "rows", self.me)
        return self._wait(self.exp.training.timeout, "the server to publish every site's rows", self.session, "rows")

    def _run_member(self) -> None:
        deadline = time.monotonic() + self.exp.training.rejoin_timeout
        while self.transport is None:  # the server may not be up yet, or restarting
            try:
                self.transport = self._make_transport()
            except TransportError as exc:
                if time.monotonic() > deadline:
                    raise
                self._log(f"waiting for the server: {exc.message}")
                time.sleep(2.0)
        self.control = self._control()
        last, first = 0, True
        while True:
            info = self._wait_session(last, deadline=time.monotonic() + self.exp.training.rejoin_timeout)
            if info is None:
                self._log("the run is complete")
                return None
            self.session = info["session"]
            try:
                load, meta = self._join()
                self._connect(first)
                first = False
                rows = self._gather_rows([])
                self._train(load, meta, rows)
                self._wait_done()
                self._log("finished")
                self.transport.close()
                return None
            except _RECOVERABLE as exc:
                self._log(f"session {self.session} stopped: {exc}; waiting for the server to resume")
                last = self.session

    def _wait_session(self, last: int, deadline: float) -> dict | None:
        while time.monotonic() < deadline:
            try:
                if self._control().get(self._key("done")) is not None:
                    return None
                value = self._control().get(self._key("session"))
            except Exception:  # the server restarted: reach its new store
                try:
                    self.transport.connect([], timeout=5)
                except MedsplitError:
                    pass
                time.sleep(1.0)
                continue
            if value is not None:
                info = json.loads(value)
                if info["session"] > last:
                    if info["digest"] != experiment_digest(self.exp):
                        raise ConfigError(f"the server runs a different experiment than {self.exp.path}",
                                          hint="use the same experiment file as the server")
                    return info
            time.sleep(0.2)
        raise PeerTimeout(f"party '{self.me}' waited {self.exp.training.rejoin_timeout:.0f} s for the server")

    def _join(self) -> int | None:
        """Answer the server's challenge, report checkpoints, and learn the step to resume from."""
        self._set({"digest": experiment_digest(self.exp), "pid": os.getpid()}, self.session, "hello", self.me)
        t = self.exp.training.timeout
        nonce = bytes.fromhex(self._wait(t, "the server's challenge", self.session, "challenge", self.me)["nonce"])
        if self.opts.credentials is None:
            raise AuthenticationError(f"party '{self.me}' has no credentials to answer the server's challenge",
                                      hint="set node.secret_env (or secret_file, private_key) in the site YAML")
        self._set({"answer": answer(self.opts.credentials, self.run_id, self.me, nonce).hex()},
                  self.session, "response", self.me)
        verdict = self._wait(t, "the server's verdict", self.session, "verdict", self.me)["verdict"]
        if verdict != "ok":
            self._log(f"the server refused this party: {verdict}")
            raise AuthenticationError(f"the server refused party '{self.me}': {verdict}",
                                      hint="check this site's credentials against the experiment's")
        self._set({"checkpoints": checkpoint_steps(self.ckpt_dir), "epoch_ends": self._epoch_ends(),
                   "data": getattr(self, "report_counts", None)}, self.session, "ready", self.me)
        start = self._wait(t, "the server's start", self.session, "start")
        self.active = start["active"]
        if self.me not in self.active:
            raise PeerTimeout(f"party '{self.me}' is not part of session {self.session}; waiting for the next")
        return start["load"].get(self.me), start["meta"]

    def _wait_done(self) -> None:
        deadline = time.monotonic() + self.exp.training.timeout
        while time.monotonic() < deadline:
            try:
                if self._control().get(self._key("done")) is not None:
                    return
            except Exception:  # the host closed its store after finishing
                return
            time.sleep(0.1)

    # --- training ------------------------------------------------------------------------------------

    def _train(self, load: int | None, meta: dict | None, rows: dict[str, list[int]]) -> dict:
        self._training = True
        try:
            return self._train_session(load, meta, rows)
        finally:
            self._training = False

    def _train_session(self, load: int | None, meta: dict | None, rows: dict[str, list[int]]) -> dict:
        """Train from the position in ``meta`` (the host's checkpoint), with this party's state at ``load``."""
        runner, tr = self.runner, self.exp.training
        runner.wire = Wire(self.transport, self.meter, self.plan.allowed(), timeout=tr.timeout, abort=self._aborted)
        schedule = Schedule(self.plan, {s: tuple(r) for s, r in rows.items()}, tr.batch_size, self.exp.seed,
                            sites=[s for s in self.topology.sites if s in self.active])
        epoch, groups_done, train_steps = 0, 0, 0
        history: list[dict] = []
        resume = meta is not None
        if resume:
            if load is not None:
                runner.load_state(self._load_own(load)["runner"])
            epoch, groups_done, train_steps = meta["epoch"], meta["groups_done"], meta["train_steps"]
            schedule.step = meta["epoch_start_step"]
            history = json.loads(meta["history"])
            state = f"its checkpoint of step {load}" if load is not None else "its current weights"
            self._log(f"resumed at epoch {epoch + 1}, {groups_done} steps into it, from {state}")
        else:
            for spec in schedule.initial_sync():
                self._run_unit(spec)
            # Every party can always go back to the start: a failure before the first checkpoint
            # must not leave the survivors' half-trained weights beside a restarted party's fresh ones.
            self._checkpoint(schedule.step, 0, 0, schedule.step, 0, [])
            self._mark_epoch_end(schedule.step)  # the start of epoch 1 is an epoch boundary too
        first_epoch = epoch
        for epoch in range(first_epoch, tr.epochs):
            epoch_start = schedule.step
            in_epoch = meta.get("in_epoch", 0) if resume and epoch == first_epoch else 0
            t0 = time.perf_counter()
            for gi, specs in enumerate(schedule.train_epoch(epoch)):
                if gi < groups_done:
                    continue
                for spec in specs:
                    self._run_unit(spec)
                done = sum(1 for s in specs if s.phase == "train")
                train_steps += done
                in_epoch += done
                if done:
                    self._progress(epoch, in_epoch, schedule.steps_per_epoch())
                if (gi + 1) % tr.checkpoint_every == 0:
                    self._checkpoint(schedule.step, epoch, gi + 1, epoch_start, train_steps, history, in_epoch)
            groups_done = 0
            for spec in schedule.eval_units():
                self._run_unit(spec)
            record = self._report_epoch(epoch + 1, train_steps, time.perf_counter() - t0)
            if record is not None:
                history.append(record)
            self._checkpoint(schedule.step, epoch + 1, 0, schedule.step, train_steps, history)
            self._mark_epoch_end(schedule.step)
            if self.is_host and epoch + 1 < tr.epochs:
                back = [p for p in self.plan.parties if p not in self.active
                        and self._control().get(self._key(self.session, "hello", p)) is not None]
                if back:  # a site that was down is back: the next session takes it in, from this epoch's end
                    raise PeerTimeout(f"{back} came back; starting a session that includes them")
        return self._summary(history, train_steps)

    def _progress(self, epoch: int, done: int, total: int) -> None:
        """About ten lines an epoch: step, latest loss per task, and bytes each site has sent the server."""
        every = max(1, total // 10)
        if done % every and done != total:
            return
        losses = {t: v[-1][0] for t, v in self.runner.train_loss.items() if v}
        if not self.is_host:
            # A party whose tasks' labels stay here (U-shaped) shares only its latest loss, for the progress line.
            if losses:
                self._set(losses, self.session, "loss", self.me)
            return
        for p in self.active:
            if p != self.me:
                posted = self._control().get(self._key(self.session, "loss", p))
                losses.update(json.loads(posted) if posted else {})
        received = self.meter.received_from(self.me)
        sites = ", ".join(f"{s} {b / 1e6:.2f} MB" for s, b in sorted(received.items()))
        loss = ", ".join(f"{t} {v:.4f}" for t, v in sorted(losses.items()))
        self._log(f"epoch {epoch + 1}/{self.exp.training.epochs} step {done}/{total}  loss: {loss or '-'}  "
                  f"received from: {sites or '-'}")

    def _run_unit(self, spec: UnitSpec) -> None:
        if self.me not in spec.parties:
            return
        batch = None
        if self.is_site and self.me in spec.rows:
            source = self.data["val" if spec.phase == "eval" else "train"]
            idx = spec.rows[self.me]
            batch = source.batch(idx)
            if self.plan.fingerprint_checker is not None:
                digest = bytes.fromhex(batch_fingerprint(source.row_ids(idx), self.fingerprint_key))
                batch[FINGERPRINT_KEY] = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
        self.runner.begin(spec.step, spec.phase, batch)
        for op in spec.ops:
            if op.party == self.me:
                self.runner.run(op, spec.step, spec.phase)
        self.runner.finish(spec.step)

    def _load_own(self, step: int) -> dict:
        state = load_checkpoint(self.ckpt_dir, step)
        if state["meta"].get("digest") != experiment_digest(self.exp):
            raise ConfigError(f"the checkpoints in {self.ckpt_dir} belong to another experiment",
                              hint="give this run its own --run-dir, or start it with --fresh")
        return state

    def _mark_epoch_end(self, step: int) -> None:
        path = self.run_dir / "epoch_ends.json"
        steps = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(sorted(set(steps) | {step})))

    def _checkpoint(self, step: int, epoch: int, groups_done: int, epoch_start: int, train_steps: int,
                    history: list[dict], in_epoch: int = 0) -> None:
        meta = {"epoch": epoch, "groups_done": groups_done, "epoch_start_step": epoch_start,
                "train_steps": train_steps, "history": json.dumps(history), "in_epoch": in_epoch,
                "digest": experiment_digest(self.exp)}
        # The newest epoch boundary is kept whatever the rotation: after a horizontal site leaves or comes
        # back, the run can only resume from one.
        ends = self._epoch_ends()
        save_checkpoint(self.ckpt_dir, step, {"runner": self.runner.state(), "meta": meta},
                        keep={ends[-1]} if ends else set())

    def _report_epoch(self, epoch: int, train_steps: int, seconds: float) -> dict | None:
        """Every party posts its aggregates; the host merges them into the run store and prints the line."""
        metrics, dcor = self.runner.pop_eval()
        mine = {"train_loss": self.runner.pop_train_loss(), "metrics": metrics, "dcor": dcor,
                "flops": self.runner.flops_per_step or 0, "compute_seconds": self.runner.compute_seconds,
                "bytes": self.meter.bytes_by_party_kind().get(self.me, {"sent": {}, "received": {}}),
                "audit": self.meter.audit()}
        self._set(mine, self.session, "epoch", epoch, self.me)
        if not self.is_host:
            return None
        posted = {p: mine if p == self.me else self._wait(self.exp.training.timeout, f"party '{p}' epoch {epoch}",
                                                          self.session, "epoch", epoch, p)
                  for p in self.active}
        train_loss = merge_train_loss([{t: tuple(v) for t, v in m["train_loss"].items()} for m in posted.values()])
        val, dcor = merge_eval([(m["metrics"], m["dcor"]) for m in posted.values()])
        self.store.log_metrics(epoch, train_steps, {t: {"loss": v} for t, v in train_loss.items()}, "train")
        self.store.log_metrics(epoch, train_steps, val, "val")
        self.store.log_traffic(epoch, train_steps, {p: m["bytes"] for p, m in posted.items()})
        for p, m in posted.items():
            self.store.log_timing(epoch, p, train_steps, m["compute_seconds"], m["flops"])
        self.store.log_dcor(epoch, dcor)
        # Each party's meter holds what that party sent: together, every crossing once.
        self.store.set_audit([row for m in posted.values() for row in m["audit"]])
        from .engine import EpochRecord
        from .run import format_epoch

        rec = EpochRecord(epoch, train_loss, val, dcor, seconds, train_steps)
        self._log(format_epoch(rec, self.exp.training.epochs))
        self._last_posted = posted
        return {"epoch": epoch, "train_loss": train_loss, "metrics": val, "dcor": dcor,
                "seconds": round(seconds, 3), "steps": train_steps}

    def _summary(self, history: list[dict], train_steps: int) -> dict:
        if not self.is_host:
            return {}
        posted = getattr(self, "_last_posted", {})
        last = history[-1] if history else {"metrics": {}, "train_loss": {}, "dcor": {}}
        audit = self.store.rows("audit")
        for row in audit:
            row["shapes"], row["dtypes"] = json.loads(row["shapes"]), json.loads(row["dtypes"])
        return {"metrics": last["metrics"], "train_loss": last["train_loss"], "dcor": last["dcor"],
                "history": history,
                "bytes": {p: {d: sum(m["bytes"][d].values()) for d in ("sent", "received")}
                          for p, m in posted.items()},
                "flops_per_step": {p: int(m["flops"]) for p, m in posted.items()},
                "compute_seconds": {p: round(m["compute_seconds"], 3) for p, m in posted.items()},
                "audit": audit, "steps": train_steps, "session": self.session}

