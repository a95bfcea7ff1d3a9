"""A member's side of a run (a site, a relay, a second server): follow the host's sessions until the run is done."""

from __future__ import annotations

import time

from ..errors import AuthenticationError, MedsplitError, PeerTimeout, ProtocolError, TransportError
from .admission import Start, join
from .node import Node
from .session import predict_session, run_session

__all__ = ["run_member"]

# Within a session, a pair to another member that fails its handshake (an impostor took its rendezvous) fails
# the session, not the party: the host's refusals come from ``join``, outside it.
_RECOVERABLE = (TransportError, PeerTimeout, ProtocolError, AuthenticationError)


def run_member(node: Node) -> None:
    """Join every session the host opens (a new one after any party failed) until the host says done.

    A refusal by the authenticated host (another experiment, credentials it does not accept) ends this party
    with the reason; anything else (the host restarting, an impostor in the way) is retried until
    ``training.rejoin_timeout`` passes without reaching the host.
    """
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
    host, control = node.host, node.control
    while True:
        info = join(node, deadline=time.monotonic() + tr.rejoin_timeout)
        if info.get("done"):
            node.log("the run is complete")
            node.transport.close()
            return
        node.session = info["session"]
        try:
            data = dict(node.site.counts) if node.site is not None else None
            control.send(host, {"checkpoints": node.checkpoints.steps(), "epoch_ends": node.checkpoints.epoch_ends(),
                                "data": data}, node.session, "ready")
            start = Start.from_json(control.wait(host, tr.timeout, "the server's start", node.session, "start",
                                                 abort=node.aborted))
            node.active = start.active
            if node.me not in node.active:
                node.log(f"not part of session {node.session}; waiting for the next")
                node.transport.drop(host, "not part of this session")
                continue
            node.connect_members(control.wait(host, tr.timeout, "the server's pair keys", node.session, "keys"))
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
            try:  # tell the host at once, instead of letting it wait out its timeout
                node.transport.drop(host, f"party '{node.me}' stopped session {node.session}: {str(exc)[:300]}")
            except MedsplitError:
                pass


def _rows(node: Node) -> dict[str, list[int]]:
    """A site sends its row counts (aligning its patients first, in vertical runs); all learn everyone's."""
    if node.is_site:
        node.control.send(node.host, {"rows": node.site_rows(), "aligned": node.aligned}, node.session, "rows")
    rows = node.control.wait(node.host, node.exp.training.timeout, "the server to send every site's rows",
                             node.session, "rows", abort=node.aborted)
    if not isinstance(rows, dict) or not all(isinstance(r, list) and len(r) == 2 for r in rows.values()):
        raise ProtocolError("the server sent the sites' rows in a shape this party cannot use")
    return rows


def _wait_done(node: Node) -> None:
    """After training: wait, bounded, for the host to mark the run complete; say so if it does not."""
    try:
        node.control.wait(node.host, node.exp.training.timeout, "the server to mark the run complete", "done")
    except TransportError as exc:
        node.log(f"trained every epoch, but the server did not mark the run complete ({exc.message}); its run "
                 "store has the outcome")
