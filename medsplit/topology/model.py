"""A topology: parties, the segments placed on them, the tasks, and how sites take part in each step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

if TYPE_CHECKING:
    from .defenses import CutDefense

__all__ = ["Party", "Segment", "Task", "Topology", "DATA", "MERGES", "LOSSES", "SCHEDULES", "ROLES"]

DATA = "data:"  # prefix of a segment input read from the party's own batch, e.g. "data:image"
ROLES = ("site", "server", "hop")
MERGES = ("concat", "sum", "mean", "route")
LOSSES = ("bce", "ce", "mse")
SCHEDULES = ("joint", "turns", "parallel")


@dataclass(frozen=True)
class Party:
    """Someone who runs segments. A site holds data (key -> per-sample shape) and may own labels.

    ``device`` is where the party's segments compute ("cpu", "cuda", "cuda:1"); what crosses to another
    party always crosses as CPU bytes, so parties on different devices (or machines) work together.
    """

    name: str
    role: Literal["site", "server", "hop"] = "site"
    data: dict[str, tuple[int, ...]] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    device: str = "cpu"


@dataclass
class Segment:
    """A piece of the network on one party.

    ``inputs`` are data keys (``"data:image"``) of the same party or names of other segments. Several
    inputs are merged along dim 1 by ``merge``: concat, sum, mean, or ``route`` (exactly one input is
    active in a step: the server segment of horizontal topologies, fed by one site at a time).
    ``out_shape`` is the per-sample output shape; inferred when ``module`` is given, and required when
    the module lives in another process (``module=None``).
    """

    name: str
    party: str
    module: nn.Module | None
    inputs: tuple[str, ...]
    merge: Literal["concat", "sum", "mean", "route"] = "concat"
    defenses: tuple[CutDefense, ...] = ()
    out_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = (self.inputs,)
        self.inputs = tuple(self.inputs)
        self.defenses = tuple(self.defenses)

    @property
    def data_inputs(self) -> tuple[str, ...]:
        return tuple(i[len(DATA):] for i in self.inputs if i.startswith(DATA))

    @property
    def segment_inputs(self) -> tuple[str, ...]:
        return tuple(i for i in self.inputs if not i.startswith(DATA))


@dataclass(frozen=True)
class Task:
    """A loss on a head segment's output against a label key.

    The loss is computed on the head's party. If another party owns the labels, they travel to the
    head only when ``share_labels`` is set (vanilla split learning); otherwise the topology is refused.
    """

    name: str
    head: str
    label: str
    loss: Literal["bce", "ce", "mse"] = "bce"
    weight: float = 1.0
    share_labels: bool = False


@dataclass
class Topology:
    """The whole graph. ``schedule`` says which sites take part in a step:

    - ``joint``: every site, on the same patients (vanilla, U-shaped, vertical, multi-task, multi-hop);
    - ``turns``: one site at a time, handing the shared client weights on (horizontal, Gupta & Raskar);
    - ``parallel``: every site on its own patients at once, client weights averaged each round (SplitFed).

    ``replicas`` groups segments that are copies of one logical segment (one per site) for ``turns`` and
    ``parallel``; ``aggregator`` is the party that averages them in ``parallel``.

    ``codecs`` encodes cut tensors on the wire, per edge: {edge name or "*": chain}, a chain being codec
    names such as ``["int8"]`` or ``["topk:0.1", "int8"]`` for both directions, or
    ``{"activation": [...], "gradient": [...]}`` (``medsplit.wire.codecs``).
    """

    name: str
    parties: Sequence[Party]
    segments: Sequence[Segment]
    tasks: Sequence[Task]
    schedule: Literal["joint", "turns", "parallel"] = "joint"
    replicas: Sequence[tuple[str, ...]] = ()
    aggregator: str | None = None
    codecs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        return [p.name for p in self.parties if p.data]
