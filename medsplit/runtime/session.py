"""One session at one node: the epoch loop over this party's units, with the node's hooks; or predictions.

The hooks are what a node adds to the loop: progress lines, its own checkpoints, posting its epoch report
(the host merges every party's into the run store), and stopping at an epoch's end for a site that is back.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.loop import EpochLoop, LoopHooks, Position
from ..engine.report import EpochRecord, PartyReport, format_epoch, merge_reports, party_report
from ..engine.units import party_executor
from ..errors import ProtocolError
from ..plan.schedule import Schedule
from .handshake import Start

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

    def progress(self, epoch: int, done: int, total: int, steps: int) -> None:
        """About ten lines an epoch: step, latest loss per task, and bytes each site has sent the server."""
        node = self.node
        every = max(1, total // 10)
        if done % every and done != total:
            return
        losses = node.runner.latest_losses()
        if not node.is_host:
            # A party whose tasks' labels stay here (U-shaped) shares only its latest loss, for the progress line.
            if losses:
                node.control.set(losses, node.session, "loss", node.me)
            return
        for p in node.active:
            if p != node.me:
                losses.update(node.control.get(node.session, "loss", p) or {})
        received = node.meter.received_from(node.me)
        sites = ", ".join(f"{s} {b / 1e6:.2f} MB" for s, b in sorted(received.items()))
        loss = ", ".join(f"{t} {v:.4f}" for t, v in sorted(losses.items()))
        node.log(f"epoch {epoch + 1}/{node.exp.training.epochs} step {done}/{total}  loss: {loss or '-'}  "
                 f"received from: {sites or '-'}")

    def checkpoint(self, step: int, position: Position) -> None:
        node = self.node
        node.checkpoints.save(step, node.runner.state(), position)
        if position.groups_done == 0:  # the start of an epoch (or of the run)
            node.checkpoints.mark_epoch_end(step)

    def epoch_end(self, epoch: int, train_steps: int, seconds: float) -> EpochRecord | None:
        """Every party posts its aggregates; the host merges them into the run store and prints the line."""
        node = self.node
        mine = party_report(node.runner)
        node.control.set(mine, node.session, "epoch", epoch, node.me)
        if self.store is None:
            return None
        timeout = node.exp.training.timeout
        self.reports = {p: mine if p == node.me else node.control.wait(timeout, f"party '{p}' epoch {epoch}",
                                                                       node.session, "epoch", epoch, p,
                                                                       abort=node.aborted)
                        for p in node.active}
        record = merge_reports(epoch, self.reports, train_steps, seconds)
        self.store.record_epoch(record, self.reports)
        node.log(format_epoch(record, node.exp.training.epochs))
        return record

    def keep_going(self, position: Position) -> bool:
        node = self.node
        if not node.is_host:
            return True
        back = [p for p in node.plan.parties if p not in node.active
                and node.control.get(node.session, "hello", p) is not None]
        if back:  # a site that was down is back: the next session takes it in, from this epoch's end
            node.log(f"{back} came back; starting a session that includes them")
            return False
        return True


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
    loop = EpochLoop(_schedule(node, rows), _execute(node), hooks, checkpoint_every=node.exp.training.checkpoint_every)
    if start.position is None:
        position = loop.start()
    else:
        _load_own(node, start)
        position = loop.resume(Position.from_json(start.position))
        state = "its checkpoint" if start.load.get(node.me) is not None or node.is_host else "its current weights"
        node.log(f"resumed at epoch {position.epoch + 1}, {position.in_epoch} steps into it, from {state}")
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
        for rid, value in zip(ids, values):
            writer.writerow([rid, ";".join(f"{v:.6f}" for v in value) if isinstance(value, list) else value])
