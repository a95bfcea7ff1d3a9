"""Admission to a session: the host challenges each party, a party answers, and refusals are explicit.

Host side (``admit``): every member says hello with its experiment digest; one with another experiment is
refused; the others get a fresh nonce and must answer it with their credentials; a wrong answer is refused.
Each refusal is logged on both sides and in the run store, and the session goes on without that party
where the topology allows it. Member side (``join``): hello, answer, verdict, then the member reports its
checkpoints and learns where the session resumes.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import AuthenticationError, PeerTimeout
from .auth import Credentials, answer, verify
from .control import Abort, ControlPlane

__all__ = ["Admission", "admit", "join", "Start"]


@dataclass
class Admission:
    """The host's view after a session's handshake: what each admitted party reported, and who was refused."""

    ready: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Start:
    """What the host publishes to start a session: where to resume, who takes part, what each loads."""

    resume: int | None
    position: dict[str, Any] | None
    active: list[str]
    load: dict[str, int | None]

    def to_json(self) -> dict[str, Any]:
        return {"resume": self.resume, "meta": self.position, "active": self.active, "load": self.load}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Start:
        return cls(d["resume"], d["meta"], list(d["active"]), dict(d["load"]))


def admit(control: ControlPlane, session: int, members: Collection[str], *, digest: str, run_id: str,
          credentials: Mapping[str, Credentials], optional: Collection[str], rejoin_timeout: float,
          optional_after: float, refuse: Callable[[str, str], None], log: Callable[[str], None]) -> Admission:
    """Challenge every member; refuse any that runs another experiment or cannot prove who it is.

    Every party is awaited up to ``rejoin_timeout``; ``optional`` parties (horizontal and SplitFed sites)
    that have not come after ``optional_after`` seconds are left out of this session while one of them is in.
    """
    out = Admission()
    start = time.monotonic()
    deadline = start + rejoin_timeout
    pending = set(members)
    nonces: dict[str, bytes] = {}
    while pending:
        now = time.monotonic()
        if now > start + optional_after and pending <= set(optional) and set(out.ready) & set(optional):
            break  # the missing sites are down: go on with the others
        if now > deadline:
            raise PeerTimeout(f"parties {sorted(pending)} did not join within {rejoin_timeout:.0f} s",
                                hint="start them (medsplit site --config SITE.yaml); the rejoin wait is "
                                     "training.rejoin_timeout in the experiment")
        for p in sorted(pending):
            hello = control.get(session, "hello", p)
            if hello is None:
                continue
            if p not in nonces:
                if hello.get("digest") != digest:
                    why = "its experiment differs from the server's (topology, training or sites)"
                    control.set({"verdict": f"refused: {why}"}, session, "verdict", p)
                    out.refused[p] = why
                    refuse(p, why)
                    pending.discard(p)
                    continue
                nonces[p] = secrets.token_bytes(32)
                control.set({"nonce": nonces[p].hex()}, session, "challenge", p)
                continue
            response = control.get(session, "response", p)
            if response is None:
                continue
            creds = credentials.get(p)
            if creds is None or not verify(creds, run_id, p, nonces[p], bytes.fromhex(response["answer"])):
                why = "its answer to the challenge does not match the credentials the experiment lists for it"
                control.set({"verdict": f"refused: {why}"}, session, "verdict", p)
                out.refused[p] = why
                refuse(p, why)
                pending.discard(p)
                continue
            control.set({"verdict": "ok"}, session, "verdict", p)
            ready = control.wait(max(deadline - time.monotonic(), 1.0), f"party '{p}' to report its checkpoints",
                                 session, "ready", p)
            data = ready.get("data")
            counts = f"; data: {data['found']} found, {data['loaded']} loaded, {data['rejected']} rejected" \
                if data else ""
            log(f"party '{p}' authenticated ({creds.describe()}){counts}")
            out.ready[p] = ready
            pending.discard(p)
        time.sleep(0.05)
    return out


def join(control: ControlPlane, session: int, me: str, *, digest: str, run_id: str,
         credentials: Credentials | None, checkpoints: list[int], epoch_ends: list[int],
         data_counts: dict[str, int] | None, timeout: float, abort: Abort) -> Start:
    """A member's side: hello, answer the challenge, report checkpoints, and wait for the session's start."""
    control.set({"digest": digest, "pid": os.getpid()}, session, "hello", me)
    # A party running another experiment gets a verdict instead of a challenge.
    which, challenge = control.wait_first(timeout, "the server's challenge",
                                          [(session, "challenge", me), (session, "verdict", me)], abort=abort)
    if which == 1:
        raise AuthenticationError(f"the server refused party '{me}': {challenge['verdict']}",
                                  hint="use the same experiment file as the server")
    if credentials is None:
        raise AuthenticationError(f"party '{me}' has no credentials to answer the server's challenge",
                                  hint="set node.secret_env (or secret_file, private_key) in the site YAML")
    nonce = bytes.fromhex(challenge["nonce"])
    control.set({"answer": answer(credentials, run_id, me, nonce).hex()}, session, "response", me)
    verdict = control.wait(timeout, "the server's verdict", session, "verdict", me, abort=abort)["verdict"]
    if verdict != "ok":
        raise AuthenticationError(f"the server refused party '{me}': {verdict}",
                                  hint="check this site's credentials against the experiment's")
    control.set({"checkpoints": checkpoints, "epoch_ends": epoch_ends, "data": data_counts}, session, "ready", me)
    return Start.from_json(control.wait(timeout, "the server's start", session, "start", abort=abort))

