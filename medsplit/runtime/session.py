"""One session at one node: the epoch loop over this party's units, with the node's hooks; or predictions.

The hooks are what a node adds to the loop: progress lines, its own checkpoints, sending its epoch report to
the host (which merges every party's into the run store), and stopping at an epoch's end for a site that is back.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.loop import EpochLoop, LoopHooks, Position
from ..engine.report import EpochRecord, PartyReport, format_epoch, merge_reports, party_report
from ..engine.units import party_executor
from ..errors import ProtocolError
from ..plan.schedule import Schedule
from ..runstore import StepLog, declared_flows
from .admission import Start

if TYPE_CHECKING:
    from ..runstore import RunStore
    from .node import Node

__all__ = ["run_session", "predict_session", "NodeHooks", "write_predictions"]


class NodeHooks(LoopHooks):
    """What a node does at the loop's moments. ``store`` is the host's run store (None elsewhere)."""

    def __init__(self, node: Node, store: RunStore | None) -> None:
        self.node = node
        self.store = store
        self.reports: dict[str, PartyReport] = {}  # the host: every party's last report
        self.steps = StepLog(store) if store is not None else None  # the host: live progress, a few writes a second
        self.trained = 0  # training steps of the run so far (set from the position a session starts at)
        self._total = 0  # training steps of an epoch
        self._heard: dict[str, int] = {}

    def progress(self, epoch: int, done: int, total: int, steps: int) -> None:
        """About ten lines an epoch: step, latest loss per task, and bytes each site has sent the server; at the
        host, live progress into the run store."""
        node = self.node
        self.trained += steps
        self._total = total
        if self.steps is not None and self.steps.due(force=done == total):
            self._record_step(self.steps, epoch, done, total)
        every = max(1, total // 10)
        if done % every and done != total:
            return
        losses = node.runner.latest_losses()
        if not node.is_host:
            # A party whose tasks' labels stay here (U-shaped) shares only its latest loss, for the progress line.
            if losses:
                node.control.send(node.host, losses, node.session, "loss")
            return
        losses.update(self._peer_losses())
        received = node.meter.received_from(node.me)
        sites = ", ".join(f"{s} {b / 1e6:.2f} MB" for s, b in sorted(received.items()))
        loss = ", ".join(f"{t} {v:.4f}" for t, v in sorted(losses.items()))
        node.log(f"epoch {epoch + 1}/{node.exp.training.epochs} step {done}/{total}  loss: {loss or '-'}  "
                 f"received from: {sites or '-'}")

    def _peer_losses(self) -> dict[str, float]:
        """The latest loss each other party shared (U-shaped: labels stay there): only finite numbers for tasks of
        this plan are kept, so a peer cannot write anything else into the progress lines or the run store."""
        node, losses = self.node, {}
        for p in node.active:
            if p != node.me:
                theirs = node.control.get(p, node.session, "loss")
                if isinstance(theirs, dict):
                    losses.update({t: float(v) for t, v in theirs.items() if t in node.plan.tasks
                                   and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)})
        return losses

    def _record_step(self, steps: StepLog, epoch: int, done: int, total: int) -> None:
        """The step counter, the latest losses, what crossed here, and who was heard from since the last write."""
        node = self.node
        losses = {**node.runner.latest_losses(), **self._peer_losses()}
        heard = node.meter.received_from(node.me)
        seen = [node.me] + [p for p, b in heard.items() if b != self._heard.get(p)]
        self._heard = heard
        steps.write(epoch + 1, done, total, self.trained, losses, node.meter.flows(), seen)

    def checkpoint(self, step: int, position: Position) -> None:
        node = self.node
        node.checkpoints.save(step, node.runner.state(), position)
        if position.groups_done == 0:  # the start of an epoch (or of the run)
            node.checkpoints.mark_epoch_end(step)

    def epoch_end(self, epoch: int, train_steps: int, seconds: float) -> EpochRecord | None:
        """Every party sends its aggregates to the host, which merges them into the run store and prints the line."""
        node = self.node
        mine = party_report(node.runner)
        if not node.is_host:
            node.control.send(node.host, mine, node.session, "epoch", epoch)
        if self.store is None:
            return None
        timeout = node.exp.training.timeout
        self.reports = {p: mine if p == node.me else checked_report(p, node.control.wait(
                            p, timeout, f"party '{p}' epoch {epoch}", node.session, "epoch", epoch,
                            abort=node.aborted))
                        for p in node.active}
        record = merge_reports(epoch, self.reports, train_steps, seconds)
        self.store.record_epoch(record, self.reports)
        self.store.heard(list(self.reports), train_steps)  # every party posted its report: each was heard now
        if self.steps is not None:  # after validation: the live transfers include the epoch's evaluation too
            self._record_step(self.steps, epoch - 1, self._total, self._total)
        node.log(format_epoch(record, node.exp.training.epochs))
        return record

    def keep_going(self, position: Position) -> bool:
        node = self.node
        if not node.is_host:
            return True
        back = [p for p in node.plan.parties if p not in node.active
                and node.control.knocked(p) not in (None, node.answered.get(p))]
        if back:  # a site that was down is back: the next session takes it in, from this epoch's end
            node.log(f"{back} came back; starting a session that includes them")
            return False
        return True


def checked_report(party: str, report: Any) -> PartyReport:
    """A member's epoch report, refused (as a protocol error, ending this session) unless it has the right shape."""
    want: dict[str, type | tuple[type, ...]] = {"train_loss": dict, "metrics": dict, "dcor": dict, "flops": int,
                                               "compute_seconds": (int, float), "bytes": dict, "audit": list}
    if not isinstance(report, dict) or any(not isinstance(report.get(k), t) for k, t in want.items()):
        raise ProtocolError(f"party '{party}' sent an epoch report that is not one",
                            hint="the party runs an incompatible or faulty medsplit")
    return report


def _execute(node: Node) -> Any:
    key = node.fingerprint_key if node.plan.fingerprint_checker is not None else None
    return party_executor(node.runner, node.data, key)


def _schedule(node: Node, rows: Mapping[str, Sequence[int]]) -> Schedule:
    tr = node.exp.training
    return Schedule(node.plan, {s: (int(r[0]), int(r[1])) for s, r in rows.items()}, tr.batch_size, node.exp.seed,
                    sites=[s for s in node.topology.sites if s in node.active], micro_batches=tr.micro_batches)


def _load_own(node: Node, start: Start) -> None:
    step = start.resume if node.is_host else start.load.get(node.me)
    if step is not None:
        state, _ = node.checkpoints.load(step)
        node.runner.load_state(state)


def run_session(node: Node, start: Start, rows: Mapping[str, Sequence[int]], store: RunStore | None
                ) -> tuple[Position, NodeHooks]:
    """Train from ``start`` (the host's position; this party's own state from its checkpoint)."""
    node.runner.wire = node.wire()
    hooks = NodeHooks(node, store)
    schedule = _schedule(node, rows)
    loop = EpochLoop(schedule, _execute(node), hooks, checkpoint_every=node.exp.training.checkpoint_every)
    if store is not None:
        store.set_plan(declared_flows(node.plan, node.exp.training.batch_size), node.exp.training.batch_size,
                       schedule.steps_per_epoch())
    if start.position is None:
        position = loop.start()
    else:
        _load_own(node, start)
        position = loop.resume(Position.from_json(start.position))
        state = "its checkpoint" if start.load.get(node.me) is not None or node.is_host else "its current weights"
        node.log(f"resumed at epoch {position.epoch + 1}, {position.in_epoch} steps into it, from {state}")
    hooks.trained = position.train_steps
    return loop.run(node.exp.training.epochs, position), hooks


def predict_session(node: Node, start: Start, rows: Mapping[str, Sequence[int]], out_dir: Path) -> dict[str, int]:
    """Every row forward with the run's last weights; a site writes the predictions of tasks it owns."""
    node.runner.wire = node.wire()
    _load_own(node, start)
    schedule = _schedule(node, rows)
    execute = _execute(node)
    ids: list[str] = []
    for spec in schedule.eval_units("predict"):
        execute([spec])
        if node.data is not None and node.me in spec.rows:
            ids += node.data.val.row_ids(spec.rows[node.me])
    written = {}
    for task, values in node.runner.pop_predictions().items():
        if len(values) != len(ids):
            raise ProtocolError(f"party '{node.me}' holds {len(values)} predictions of task '{task}' for "
                                f"{len(ids)} rows", hint="every party must predict from the same rows")
        path = out_dir / f"predictions-{task}.csv"
        write_predictions(path, task, ids, values.tolist())
        node.log(f"{task}: {len(ids)} predictions written to {path}")
        written[task] = len(ids)
    return written


def write_predictions(path: Path, task: str, ids: Sequence[str], values: Sequence[Any]) -> None:
    """One row per patient (row_id, prediction); written only where the task's labels live."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row_id", task])
        for rid, value in zip(ids, values, strict=True):
            writer.writerow([rid, ";".join(f"{v:.6f}" for v in value) if isinstance(value, list) else value])
