"""The one epoch loop: train, evaluate, report and checkpoint, for in-process runs, nodes and benchmarks alike.

What differs between those is not the loop but how a group of units is executed (every party in this
process, or only this node's party) and what happens at its hooks (a progress bar or a log line, a
checkpoint file or none, merging every party's report here or posting it to the host).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..plan.schedule import Schedule, UnitSpec
from .report import EpochRecord

__all__ = ["Position", "LoopHooks", "EpochLoop", "Execute"]

#: runs a group of units (the units of one group may run concurrently: SplitFed's sites)
Execute = Callable[[list[UnitSpec]], None]


@dataclass
class Position:
    """Where a run is: what a checkpoint records, and what every party resumes from.

    ``epoch`` epochs are finished; of the current one, ``groups_done`` groups of units (``in_epoch`` training
    steps) are done, and it started at the schedule's step ``epoch_start``.
    """

    epoch: int = 0
    groups_done: int = 0
    epoch_start: int = 0
    train_steps: int = 0
    in_epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)

    def next_epoch(self, step: int) -> None:
        """The current epoch is finished; the next starts at the schedule's ``step``."""
        self.epoch += 1
        self.groups_done = self.in_epoch = 0
        self.epoch_start = step

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "groups_done": self.groups_done, "epoch_start": self.epoch_start,
                "train_steps": self.train_steps, "in_epoch": self.in_epoch,
                "history": json.dumps([r.as_dict() for r in self.history])}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Position:
        return cls(int(d["epoch"]), int(d["groups_done"]), int(d["epoch_start"]), int(d["train_steps"]),
                   int(d["in_epoch"]), [EpochRecord.from_dict(r) for r in json.loads(d["history"])])


class LoopHooks:
    """What a caller does at the loop's moments; every hook does nothing by default."""

    def progress(self, epoch: int, done: int, total: int, steps: int) -> None:
        """After each group with training steps: ``done`` of ``total`` steps of epoch ``epoch`` (0-based)."""

    def checkpoint(self, step: int, position: Position) -> None:
        """At the start, every ``checkpoint_every`` groups, and at each epoch's end (``position`` is after it)."""

    def epoch_end(self, epoch: int, train_steps: int, seconds: float) -> EpochRecord | None:
        """After an epoch's evaluation (``epoch`` 1-based): the merged record, or None at a party that does
        not merge (a node that is not the host)."""
        return None

    def keep_going(self, position: Position) -> bool:
        """After an epoch's checkpoint: False stops the loop there (a node stops to let a site rejoin)."""
        return True


class EpochLoop:
    """Runs the schedule's units through ``execute``, calling ``hooks`` at each moment."""

    def __init__(self, schedule: Schedule, execute: Execute, hooks: LoopHooks | None = None, *,
                 checkpoint_every: int | None = None) -> None:
        self.schedule = schedule
        self.execute = execute
        self.hooks = hooks or LoopHooks()
        self.checkpoint_every = checkpoint_every

    def start(self) -> Position:
        """A fresh run: every replica gets the same weights, and a checkpoint marks the start.

        Every party can always go back to the start: a failure before the first checkpoint must not leave
        the survivors' half-trained weights beside a restarted party's fresh ones.
        """
        for spec in self.schedule.initial_sync():
            self.execute([spec])
        position = Position(epoch_start=self.schedule.step)
        self.hooks.checkpoint(self.schedule.step, position)
        return position

    def resume(self, position: Position) -> Position:
        """Continue from ``position`` (a checkpoint's): the schedule numbers units as it did then."""
        self.schedule.step = position.epoch_start
        return position

    def train_epoch(self, position: Position) -> int:
        """The rest of the current epoch's training; returns the training steps run."""
        epoch = position.epoch
        total = self.schedule.steps_per_epoch()
        steps = 0
        for gi, specs in enumerate(self.schedule.train_epoch(epoch)):
            if gi < position.groups_done:
                continue
            self.execute(specs)
            done = sum(1 for s in specs if s.phase == "train")
            steps += done
            position.train_steps += done
            position.in_epoch += done
            position.groups_done = gi + 1
            if done:
                self.hooks.progress(epoch, position.in_epoch, total, done)
            if self.checkpoint_every and position.groups_done % self.checkpoint_every == 0:
                self.hooks.checkpoint(self.schedule.step, position)
        return steps

    def evaluate(self, phase: Literal["eval", "predict"] = "eval") -> None:
        """Every validation batch, forward only (``phase="predict"``: no labels, predictions kept)."""
        for spec in self.schedule.eval_units(phase):
            self.execute([spec])

    def run(self, epochs: int, position: Position) -> Position:
        """Train and evaluate until ``epochs`` epochs are finished (or a hook says stop)."""
        while position.epoch < epochs:
            t0 = time.perf_counter()
            self.train_epoch(position)
            self.evaluate()
            position.next_epoch(self.schedule.step)
            record = self.hooks.epoch_end(position.epoch, position.train_steps, time.perf_counter() - t0)
            if record is not None:
                position.history.append(record)
            self.hooks.checkpoint(self.schedule.step, position)
            if position.epoch < epochs and not self.hooks.keep_going(position):
                break
        return position

