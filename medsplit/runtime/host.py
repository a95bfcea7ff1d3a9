"""The host's side of a run: open sessions, admit parties, agree where to resume, train, write the run store."""

from __future__ import annotations

import json
import time
from typing import Any

from ..engine.report import summarize
from ..errors import DataError, PeerTimeout, ProtocolError, RunError, TransportError
from ..runstore import RunStore, stop_reason
from .admission import Start, admit, pair_keys
from .node import Node
from .resume import resume_point
from .session import predict_session, run_session

__all__ = ["run_host", "MAX_RETRIES"]

#: sessions in a row that fail before reaching a new checkpoint: then the run fails
MAX_RETRIES = 5
_RECOVERABLE = (TransportError, PeerTimeout, ProtocolError)


def run_host(node: Node) -> dict[str, Any]:
    """Drive sessions until the run completes; returns the run summary (also in RUN_DIR/summary.json).

    A run that cannot go on (every retry failed, a required party refused) is marked failed in the run
    store, with the reason, before the error is raised; one interrupted (Ctrl-C, or SIGTERM, which the CLI
    turns into KeyboardInterrupt) is marked stopped.
    """
    store = RunStore(node.run_dir) if node.opts.mode == "train" else None
    try:
        return _host(node, store)
    except KeyboardInterrupt as exc:
        if store is not None:
            store.set_status("stopped", stop_reason(exc), unless_final=True)
        raise
    except BaseException as exc:
        if store is not None:
            store.set_info(error=str(exc)[:2000])
            store.set_status("failed", str(exc)[:2000])
        raise
    finally:
        if store is not None:
            store.close()


def _host(node: Node, store: RunStore | None) -> dict[str, Any]:
    exp, tr = node.exp, node.exp.training
    state_file = node.run_dir / "session.json"
    node.session = json.loads(state_file.read_text())["session"] if state_file.exists() else 0
    node.open_transport()
    mode = node.opts.mode  # predictions leave the training run's store as it was (store is None)
    if store is not None:
        resumed = node.checkpoints.steps() != []  # this directory holds an earlier session's checkpoints
        facts = dict(name=exp.name, preset=exp.topology.preset, transport=node.opts.transport, seed=exp.seed,
                     epochs=tr.epochs, parties=list(node.plan.parties), topology=node.plan.describe(),
                     experiment=str(exp.path), nopeek=exp.topology.nopeek)
        if resumed and store.info().get("started"):
            facts.update(resumed_at=time.time(), resumes=int(store.info().get("resumes") or 0) + 1)
        else:
            facts["started"] = time.time()
        store.set_info(**facts)
        store.set_status("running", "resumed from its checkpoints" if "resumes" in facts else "")
    node.log(f"hosting run '{node.run_id}' ({mode}) on {node.opts.host}:{node.transport.port}")
    members = [p for p in node.plan.parties if p != node.me]
    optional = set(node.topology.sites) if node.topology.schedule != "joint" and mode == "train" else set()
    failures, last_resume, seen, previous = 0, None, set(), None
    t0 = time.perf_counter()
    while True:
        node.session += 1
        state_file.write_text(json.dumps({"session": node.session}))
        # Members still in the last session learn at once that it is over (and knock to join this one).
        for p in list(node.transport.connected):
            node.transport.drop(p, f"the server starts session {node.session}")

        def event(party: str, status: str, detail: str = "") -> None:
            if store is not None:
                store.log_event(party, status, detail)

        def refuse(party: str, why: str) -> None:
            event(party, "refused", why)
            node.log(f"refused party '{party}': {why}")

        admission = admit(node, node.session, members, optional=optional, rejoin_timeout=tr.rejoin_timeout,
                          optional_after=min(tr.timeout, tr.rejoin_timeout), refuse=refuse)
        admitted = sorted(admission.ready)
        for p in admitted:
            event(p, "resumed" if p in seen else "connected")
        for p in sorted(set(members) - set(admitted)):
            event(p, "down", "did not rejoin; the run goes on with the other sites")
            node.log(f"site '{p}' is down: continuing with {[s for s in admitted if s in node.topology.sites]}")
        seen |= set(admitted)
        node.active = [node.me] + admitted
        changed = previous is not None and previous != set(node.active)
        resume, load = resume_point(node.checkpoints, admission.ready, changed=changed, replicas=optional)
        if mode == "predict" and resume is None:
            raise DataError(f"no checkpoint that every party has under {node.run_dir} and the sites' run "
                                "directories", hint="train first, then predict with the same run directories")
        previous = set(node.active)
        failures = failures + 1 if resume is not None and resume == last_resume else 0
        if failures >= MAX_RETRIES:
            raise RunError(f"the run failed {failures} times in a row from step {resume}",
                                hint="see the parties' logs for the error; fix it and restart the server")
        last_resume = resume
        # Every party takes its place in the schedule from the host's checkpoint: one truth for where we are.
        position = node.checkpoints.load(resume)[1].to_json() if resume is not None else None
        start = Start(resume, position, node.active, load)
        try:
            keys = pair_keys(node, node.active)
            for p in admitted:
                node.control.send(p, keys[p], node.session, "keys")
                node.control.send(p, start.to_json(), node.session, "start")
            rows = _gather_rows(node)
            for p in node.active:
                event(p, "training", f"session {node.session}, from step {resume or 0}")
            node.training = True
            try:
                if node.opts.predict_out is not None:
                    summary = _predicted(node, predict_session(node, start, rows, node.opts.predict_out))
                    break
                result, hooks = run_session(node, start, rows, store)
            finally:
                node.training = False
        except _RECOVERABLE as exc:
            node.log(f"session {node.session} stopped: {exc}")
            for p in node.lost_peers():
                event(p, "down", str(exc)[:500])
            continue
        if result.epoch < tr.epochs:
            continue  # a site came back: the next session takes it in
        summary = {**summarize(result.history, hooks.reports, result.train_steps, time.perf_counter() - t0),
                   "preset": exp.topology.preset, "transport": node.opts.transport, "seed": exp.seed,
                   "epochs": tr.epochs, "status": "completed", "name": exp.name, "session": node.session}
        for p in node.plan.parties:
            event(p, "finished")
        if store is not None:
            store.set_status("completed")
        (node.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        break
    _finish(node)
    return summary


def _gather_rows(node: Node) -> dict[str, list[int]]:
    """Every site of the session sends its row counts; the host sends them all to every party (the schedule's input)."""
    timeout = node.exp.training.timeout
    posted = {s: node.control.wait(s, timeout, f"site '{s}' to report its rows", node.session, "rows",
                                   abort=node.aborted)
              for s in node.topology.sites if s in node.active}
    for s, p in posted.items():
        if not (isinstance(p, dict) and isinstance(p.get("rows"), list) and len(p["rows"]) == 2
                and all(isinstance(n, int) and n >= 0 for n in p["rows"])):
            raise ProtocolError(f"site '{s}' reported its rows as {str(p)[:100]}, not two row counts")
    aligned = {p["aligned"] for p in posted.values() if p.get("aligned") is not None}
    if aligned and node.session == 1:
        node.log(f"aligned by private set intersection: {min(aligned)} common patients")
    rows = {s: p["rows"] for s, p in posted.items()}
    for p in node.active:
        if p != node.me:
            node.control.send(p, rows, node.session, "rows")
    return rows


def _predicted(node: Node, written: dict[str, int]) -> dict[str, Any]:
    """The host's summary of a prediction session: which site holds each task's predictions."""
    return {"status": "completed", "mode": "predict", "name": node.exp.name,
            "predictions": {t.name: node.plan.label_owners(t.label) for t in node.topology.tasks},
            "written_here": written}


def _finish(node: Node) -> None:
    """Tell every connected member the run is complete, and close the channels."""
    for p in node.transport.connected:
        try:
            node.control.send(p, {"summary": "completed"}, "done")
        except TransportError:  # it left already; it trained every epoch it was part of
            pass
    try:
        node.transport.flush()
    except TransportError as exc:  # a peer that left the run earlier; the others have everything
        node.log(f"at the end: {exc.message}")
    node.transport.close()
