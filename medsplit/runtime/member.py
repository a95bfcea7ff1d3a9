"""A member's side of a run (a site, a relay, a second server): follow the host's sessions until the run is done."""

from __future__ import annotations

import time

from ..errors import ConfigError, MedsplitError, PeerTimeout, ProtocolError, TransportError
from .handshake import join
from .node import Node
from .session import predict_session, run_session

__all__ = ["run_member"]

_RECOVERABLE = (TransportError, PeerTimeout, ProtocolError)


def run_member(node: Node) -> None:
    """Join every session the host opens (a new one after any party failed) until the host says done."""
    tr = node.exp.training
    deadline = time.monotonic() + tr.rejoin_timeout
    while node._transport is None:  # the server may not be up yet, or restarting
        try:
            node.open_transport()
        except TransportError as exc:
            if time.monotonic() > deadline:
                raise
            node.log(f"waiting for the server: {exc.message}")
            time.sleep(2.0)
    last, first = 0, True
    while True:
        info = _next_session(node, last, deadline=time.monotonic() + tr.rejoin_timeout)
        if info is None:
            node.log("the run is complete")
            return
        node.session = info["session"]
        last = node.session
        try:
            start = join(node.control, node.session, node.me, digest=node.digest, run_id=node.run_id,
                         credentials=node.opts.credentials, checkpoints=node.checkpoints.steps(),
                         epoch_ends=node.checkpoints.epoch_ends(),
                         data_counts=dict(node.site.counts) if node.site is not None else None,
                         timeout=tr.timeout, abort=node.aborted)
            node.active = start.active
            if node.me not in node.active:
                node.log(f"not part of session {node.session}; waiting for the next")
                continue
            node.connect(first)
            first = False
            rows = _rows(node)
            node.training = True
            try:
                if node.opts.predict_out is not None:
                    predict_session(node, start, rows, node.opts.predict_out)
                else:
                    run_session(node, start, rows, store=None)
            finally:
                node.training = False
            _wait_done(node)
            node.log("finished")
            node.transport.close()
            return
        except _RECOVERABLE as exc:
            node.log(f"session {node.session} stopped: {exc}; waiting for the server to resume")


def _next_session(node: Node, last: int, deadline: float) -> dict | None:
    """The host's next session after ``last``, or None when the run is complete."""
    while time.monotonic() < deadline:
        try:
            if node.control.get("done") is not None:
                return None
            info = node.control.get("session")
        except TransportError:  # the server restarted: reach its new store
            try:
                node.transport.connect([], timeout=5)
            except MedsplitError:
                pass
            time.sleep(1.0)
            continue
        if info is not None and info["session"] > last:
            if info.get("mode", "train") != node.opts.mode:
                raise ConfigError(f"the server runs {info.get('mode')!r} and this party was started for "
                                    f"{node.opts.mode!r}", hint="start the server and every party with the same "
                                                               "command (with or without --predict)")
            return info
        time.sleep(0.2)
    raise PeerTimeout(f"party '{node.me}' waited {node.exp.training.rejoin_timeout:.0f} s for the server")


def _rows(node: Node) -> dict[str, list[int]]:
    """A site posts its row counts (aligning its patients first, in vertical runs); all learn everyone's."""
    if node.is_site:
        node.control.set({"rows": node.site_rows(), "aligned": node.aligned}, node.session, "rows", node.me)
    rows: dict[str, list[int]] = node.control.wait(node.exp.training.timeout, "the server to publish every site's rows",
                                                   node.session, "rows", abort=node.aborted)
    return rows


def _wait_done(node: Node) -> None:
    """After training: wait, bounded, for the host to mark the run complete; say so if it does not."""
    deadline = time.monotonic() + node.exp.training.timeout
    while time.monotonic() < deadline:
        try:
            if node.control.get("done") is not None:
                return
        except TransportError:  # the host closed its store after finishing
            return
        time.sleep(0.1)
    node.log(f"trained every epoch, but the server did not mark the run complete within "
             f"{node.exp.training.timeout:.0f} s; its run store has the outcome")
