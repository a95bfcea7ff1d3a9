"""Where a run resumes: each party's checkpoints, the epoch ends among them, and the step every party agrees on."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ..engine.loop import Position
from ..errors import ConfigError
from .checkpoint import checkpoint_steps, load_checkpoint, save_checkpoint

__all__ = ["PartyCheckpoints", "resume_point"]


class PartyCheckpoints:
    """One party's checkpoints under ``run_dir``, each tagged with the experiment's digest.

    ``epoch_ends`` remembers which saved steps ended an epoch: when the set of parties changes (a horizontal
    site leaves or comes back) the schedule changes with it, so only such a step can be resumed from.
    """

    def __init__(self, run_dir: Path, party: str, digest: str) -> None:
        self.dir = run_dir / "checkpoints" / party
        self.ends_file = run_dir / "epoch_ends.json"
        self.digest = digest

    def steps(self) -> list[int]:
        return checkpoint_steps(self.dir)

    def epoch_ends(self) -> list[int]:
        steps = set(self.steps())
        marked = json.loads(self.ends_file.read_text()) if self.ends_file.exists() else []
        return sorted(s for s in marked if s in steps)

    def mark_epoch_end(self, step: int) -> None:
        marked = json.loads(self.ends_file.read_text()) if self.ends_file.exists() else []
        self.ends_file.write_text(json.dumps(sorted(set(marked) | {step})))

    def save(self, step: int, runner_state: dict[str, Any], position: Position) -> None:
        # The newest epoch end is kept whatever the rotation: after a horizontal site leaves or comes back,
        # the run can only resume from one.
        ends = self.epoch_ends()
        meta = {**position.to_json(), "digest": self.digest}
        save_checkpoint(self.dir, step, {"runner": runner_state, "meta": meta}, keep={ends[-1]} if ends else set())

    def load(self, step: int) -> tuple[dict[str, Any], Position]:
        state = load_checkpoint(self.dir, step)
        if state["meta"].get("digest") != self.digest:
            raise ConfigError(f"the checkpoints in {self.dir} belong to another experiment",
                              hint="give this run its own --run-dir, or start it with --fresh")
        return state["runner"], Position.from_json(state["meta"])

    def clear(self) -> None:
        """Forget an earlier run's checkpoints (``--fresh``: a new run in an old directory)."""
        for step in self.steps():
            (self.dir / f"step-{step:09d}.pt").unlink()
        self.ends_file.unlink(missing_ok=True)


def resume_point(host: PartyCheckpoints, ready: Mapping[str, Mapping[str, Any]], *, changed: bool,
                 replicas: Collection[str]) -> tuple[int | None, dict[str, int | None]]:
    """The step to resume from, and which of its own checkpoints each party loads.

    ``ready`` holds what each other party reported (its ``checkpoints`` and ``epoch_ends``). The host,
    relays and every site that is not a replica must all have that exact step. A replica site (horizontal,
    SplitFed) may have missed it (it was down): it loads its newest checkpoint up to that step, and the client
    weights reach it by hand-off or averaging before its next turn. When the set of parties ``changed``, only
    an epoch's end will do.
    """
    exact = [p for p in ready if p not in replicas]
    common = set(host.epoch_ends() if changed else host.steps())
    for p in exact:
        common &= set(ready[p]["epoch_ends"] if changed else ready[p]["checkpoints"])
    resume = max(common) if common else None
    load: dict[str, int | None] = {}
    for p, info in ready.items():
        older = [s for s in info["checkpoints"] if resume is not None and s <= resume]
        load[p] = resume if p in exact else (max(older) if older else None)
    return resume, load
