"""The global sequence of steps: which sites take part, which rows, which ops — from row counts alone.

Every party derives the same sequence from the same plan, row counts, batch size and seed, so that a
party in another process knows which step comes next without being told; only the site that holds the
rows turns indices into a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..data import batch_order
from ..errors import TopologyError
from .plan import Op, Plan

__all__ = ["UnitSpec", "Schedule"]


@dataclass(frozen=True)
class UnitSpec:
    """One unit of the schedule: a training step, an evaluation batch, or a weight sync.

    ``micro_batches`` > 1: a pipelined training step, its rows split into that many micro-batches.
    """

    step: int
    phase: str  # "train", "eval", "predict" or "sync"
    ops: tuple[Op, ...]
    rows: Mapping[str, list[int]] = field(default_factory=dict)  # site -> row indices in its split
    micro_batches: int = 1
    #: the parties with ops in this unit, in order of their first op (computed once, not per use)
    parties: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parties", tuple(dict.fromkeys(op.party for op in self.ops)))

    @property
    def batch_rows(self) -> int:
        """Rows in the unit's batch (every site of a unit has as many)."""
        return len(next(iter(self.rows.values()))) if self.rows else 0



class Schedule:
    """Generates units in order and numbers them. ``rows`` is {site: (train rows, val rows)}."""

    def __init__(self, plan: Plan, rows: Mapping[str, tuple[int, int]], batch_size: int, seed: int,
                 shuffle: bool = True, step: int = 0, sites: list[str] | None = None, micro_batches: int = 1) -> None:
        if micro_batches < 1:
            raise TopologyError(f"micro_batches must be at least 1, got {micro_batches}",
                                hint="1 runs each step whole; 2 to 8 pipeline a step over its parties")
        self.micro_batches = micro_batches
        self.plan = plan
        self.rows = dict(rows)
        # The sites taking part: all of them, or (horizontal, SplitFed) those that are up.
        self.sites = [s for s in plan.topology.sites if sites is None or s in sites]
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.step = step  # the number of the last unit handed out

    def _unit(self, phase: str, ops: Sequence[Op], rows: Mapping[str, list[int]] | None = None) -> UnitSpec:
        self.step += 1
        return UnitSpec(self.step, phase, tuple(ops), dict(rows or {}))

    def _train(self, sites: list[str], rows: Mapping[str, list[int]]) -> UnitSpec:
        """A training step; pipelined over micro-batches of two rows or more (batch norm and dCor need two)."""
        m = min(self.micro_batches, max(1, len(next(iter(rows.values()))) // 2))
        self.step += 1
        return UnitSpec(self.step, "train", self.plan.step_ops(sites, "train", m), dict(rows), m)

    def initial_sync(self) -> list[UnitSpec]:
        """Every replica starts from the first site's client weights, whatever the topology's builder did.

        Horizontal hands them from site to site; SplitFed broadcasts them through the aggregator (averaging
        copies that never shared a starting point would average unrelated networks).
        """
        topo = self.plan.topology
        if not topo.replicas or len(self.sites) < 2:
            return []
        first, rest = self.sites[0], self.sites[1:]
        if topo.schedule == "turns":
            return [self._unit("sync", self.plan.handoff_ops(first, rest))]
        if topo.schedule == "parallel":
            return [self._unit("sync", self.plan.average_ops([first], receivers=rest))]
        return []

    def steps_per_epoch(self) -> int:
        sites = self.sites
        if self.plan.topology.schedule == "joint":
            sites = sites[:1]
        return sum(-(-self.rows[s][0] // self.batch_size) for s in sites)

    def train_epoch(self, epoch: int) -> Iterator[list[UnitSpec]]:
        """The epoch as groups of units, lazily; the units of one group may run concurrently (SplitFed)."""
        topo = self.plan.topology
        sites = self.sites
        if topo.schedule == "joint":
            for idx in batch_order(self.rows[sites[0]][0], self.batch_size, self.seed, epoch, self.shuffle):
                yield [self._train(sites, {s: idx for s in sites})]
            return
        orders = {s: batch_order(self.rows[s][0], self.batch_size, self.seed + i, epoch, self.shuffle)
                  for i, s in enumerate(sites)}
        if topo.schedule == "turns":
            for i, site in enumerate(sites):
                for idx in orders[site]:
                    yield [self._train([site], {site: idx})]
                nxt = [sites[i + 1]] if i + 1 < len(sites) else [s for s in sites if s != site]
                if topo.replicas and nxt:
                    # Hand the client on; after the last site, to everyone, so all evaluate the same model.
                    yield [self._unit("sync", self.plan.handoff_ops(site, nxt))]
            return
        for t in range(max(len(o) for o in orders.values())):
            yield [self._train([s], {s: orders[s][t]}) for s in sites if t < len(orders[s])]
        if topo.replicas:
            yield [self._unit("sync", self.plan.average_ops(sites))]

    def eval_units(self, phase: Literal["eval", "predict"] = "eval") -> Iterator[UnitSpec]:
        """Validation batches in row order: all sites together (joint) or one site after another.

        ``phase="predict"`` runs the same batches forward only, without labels.
        """
        sites = self.sites
        if self.plan.topology.schedule == "joint":
            ops = self.plan.step_ops(sites, phase)
            for idx in batch_order(self.rows[sites[0]][1], self.batch_size, 0, 0, shuffle=False):
                yield self._unit(phase, ops, {s: idx for s in sites})
            return
        for site in sites:
            ops = self.plan.step_ops([site], phase)
            for idx in batch_order(self.rows[site][1], self.batch_size, 0, 0, shuffle=False):
                yield self._unit(phase, ops, {site: idx})
