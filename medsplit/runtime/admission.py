"""Admission to a session: the host connects to each party that knocks, over a pair whose handshake proves both
ends; each party reports its checkpoints; refusals are explicit and cost only that attempt.

Host side (``admit``): a member's knock in the public store is only a hint; the host answers it with an
invitation and connects. The pair's handshake decides who it is: a peer that cannot prove it is the party it
claims, or runs another experiment, is refused, logged on both sides and in the run store, and the session
goes on waiting for the real one (or without it, where the topology allows). Member side (``join``): knock,
connect when invited, learn the session, report checkpoints, and wait for the session's start.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import AuthenticationError, ConfigError, MedsplitError, PeerTimeout, RefusedError
from ..transport.secure import new_pair_key

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Admission", "admit", "join", "Start", "pair_keys"]


@dataclass
class Admission:
    """The host's view after a session's admission: what each admitted party reported, and who was refused."""

    ready: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Start:
    """What the host sends to start a session: where to resume, who takes part, what each loads."""

    resume: int | None
    position: dict[str, Any] | None
    active: list[str]
    load: dict[str, int | None]

    def to_json(self) -> dict[str, Any]:
        return {"resume": self.resume, "meta": self.position, "active": self.active, "load": self.load}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Start:
        return cls(d["resume"], d["meta"], list(d["active"]), dict(d["load"]))


def admit(node: Node, session: int, members: Collection[str], *, optional: Collection[str], rejoin_timeout: float,
          optional_after: float, refuse: Callable[[str, str], None]) -> Admission:
    """Connect to and authenticate every member; refuse any that cannot prove who it is or runs another experiment.

    Every party is awaited up to ``rejoin_timeout``; ``optional`` parties (horizontal and SplitFed sites)
    that have not come after ``optional_after`` seconds are left out of this session while one of them is in.
    """
    out = Admission()
    transport, control, mode = node.transport, node.control, node.opts.mode
    timeout = node.exp.training.timeout
    hello = {"session": session, "mode": mode, "digest": node.digest}
    if not transport.rejoin:  # a static group (rpc): every party joins it at once, the first time
        if not node.connected_once:
            transport.connect()
        node.connected_once = True
        for p in members:
            control.send(p, hello, "session")
        for p in members:
            out.ready[p] = _checked(node, p, control.wait(p, timeout, f"party '{p}' to report its checkpoints",
                                                          session, "ready"))
        return out
    results: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    busy: set[str] = set()
    closed = threading.Event()

    def attempt(p: str, token: str) -> None:
        try:
            control.invite(p, token)
            transport.reconnect(p, timeout=timeout)
            control.send(p, hello, "session")
            ready = control.wait(p, timeout, f"party '{p}' to report its checkpoints", session, "ready")
            if closed.is_set():  # admission ended while this one was on its way: it joins the next session
                transport.drop(p, f"session {session} started without '{p}'; it is taken in at an epoch's end")
                return
            results.put((p, "ready", _checked(node, p, ready)))
        except AuthenticationError as exc:
            results.put((p, "refused", exc.message))
        except MedsplitError as exc:
            results.put((p, "failed", exc.message))
        except Exception as exc:  # noqa: BLE001 - reported on the host's thread
            results.put((p, "failed", f"{type(exc).__name__}: {exc}"))

    start = time.monotonic()
    deadline = start + rejoin_timeout
    try:
        while True:
            for p in sorted(set(members) - set(out.ready) - busy):
                token = control.knocked(p)
                if token is not None and token != node.answered.get(p):
                    node.answered[p] = token
                    busy.add(p)
                    threading.Thread(target=attempt, args=(p, token), name=f"medsplit-admit-{p}", daemon=True).start()
            while not results.empty():
                p, outcome, detail = results.get()
                busy.discard(p)
                if outcome == "ready":
                    out.ready[p] = detail
                    out.refused.pop(p, None)
                elif outcome == "refused":
                    out.refused[p] = detail
                    refuse(p, detail)
                else:
                    node.log(f"party '{p}' did not join session {session}: {detail}")
            pending = set(members) - set(out.ready)
            if not pending:
                break
            now = time.monotonic()
            if now > start + optional_after and pending <= set(optional) and set(out.ready) & set(optional):
                break  # the missing sites are down: go on with the others
            if now > deadline:
                why = "; ".join(f"'{p}' was refused: {out.refused[p]}" for p in sorted(pending) if p in out.refused)
                raise PeerTimeout(f"parties {sorted(pending)} did not join within {rejoin_timeout:.0f} s"
                                  + (f" ({why})" if why else ""),
                                  hint="start them (medsplit site --config SITE.yaml) with the study's experiment file "
                                       "and credentials; the wait is training.rejoin_timeout in the experiment")
            time.sleep(0.05)
    finally:
        closed.set()
    node.connected_once = True
    return out


def _checked(node: Node, p: str, ready: Any) -> dict[str, Any]:
    if not isinstance(ready, dict) or not {"checkpoints", "epoch_ends"} <= set(ready):
        raise PeerTimeout(f"party '{p}' reported no checkpoints")
    data = ready.get("data")
    counts = f"; data: {data['found']} found, {data['loaded']} loaded, {data['rejected']} rejected" \
        if isinstance(data, dict) and {"found", "loaded", "rejected"} <= set(data) else ""
    node.log(f"party '{p}' authenticated{counts}")
    return ready


def pair_keys(node: Node, active: Collection[str]) -> dict[str, dict[str, str]]:
    """A fresh key for each pair of active members that talk directly, for both ends (peer -> hex)."""
    keys: dict[str, dict[str, str]] = {p: {} for p in active if p != node.host}
    for p in keys:
        for q in node.member_peers(p):
            if q in keys and p < q:
                k = new_pair_key().hex()
                keys[p][q] = keys[q][p] = k
    return keys


def join(node: Node, deadline: float) -> dict[str, Any]:
    """A member's way in: knock, connect when invited (the handshake proves both ends), and return the host's
    first value: the session it opens, or that the run is done. Raises RefusedError when the host refused this
    party; other failures (a connection an impostor took, a host that did not answer in time) are retried until
    ``deadline``."""
    control, transport, tr = node.control, node.transport, node.exp.training
    if not transport.rejoin:  # a static group (rpc): joined whole, once
        if not node.connected_once:
            transport.connect()
            node.connected_once = True
        return _checked_mode(node, _first(node))
    last: MedsplitError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerTimeout(f"party '{node.me}' could not join the server within {tr.rejoin_timeout:.0f} s"
                              + (f": {last.message}" if last else ""),
                              hint=last.hint if last and last.hint else "check that the server is running")
        try:
            transport.refresh_store()
            control.wait_invited(control.knock(), min(left, max(tr.rejoin_timeout / 3, tr.timeout)))
            transport.reconnect(node.host, timeout=max(min(tr.timeout, deadline - time.monotonic()), 1.0))
            return _checked_mode(node, _first(node))
        except (RefusedError, ConfigError):
            raise
        except AuthenticationError as exc:
            node.log(f"could not authenticate the server: {exc.message}; trying again")
            last = exc
        except MedsplitError as exc:
            last = exc
            time.sleep(0.5)


def _checked_mode(node: Node, first: dict[str, Any]) -> dict[str, Any]:
    if "done" not in first and first.get("mode") != node.opts.mode:
        raise ConfigError(f"the server runs {first.get('mode')!r} and this party was started for {node.opts.mode!r}",
                          hint="start the server and every party with the same command (with or without --predict)")
    return first


def _first(node: Node) -> dict[str, Any]:
    """The host's next value on its connection: a ``session`` newer than this party's last, or ``done``."""
    inbox = node.transport.inbox(node.host)
    deadline = time.monotonic() + node.exp.training.timeout
    while time.monotonic() < deadline:
        if inbox.get("done") is not None:
            return {"done": True}
        value = inbox.get("session")
        if isinstance(value, dict) and isinstance(value.get("session"), int) and value["session"] > node.session:
            return value
        if node.host not in node.transport.connected:
            break
        time.sleep(0.05)
    raise PeerTimeout(f"the server connected to party '{node.me}' but did not open a session")
