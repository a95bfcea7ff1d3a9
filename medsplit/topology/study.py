"""What a study is made of, before it is a topology: its sites (data, labels, encoders) and its tasks.

A preset turns a ``StudySpec`` into a ``Topology``; so can a study's own factory. Sites hold any mix of
modalities (tables, 2D or 3D images), each with its own shapes and, if the study chooses, its own encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from .encoders import EncoderSpec, default_encoder

__all__ = ["SiteSpec", "TaskSpec", "StudySpec", "TASK_KINDS", "LOSS_OF"]

TASK_KINDS = ("binary", "multiclass", "regression")
LOSS_OF = {"binary": "bce", "multiclass": "ce", "regression": "mse"}


@dataclass(frozen=True)
class SiteSpec:
    """A site as the topology sees it: its party, per-sample shapes by data key, the labels it owns, and the
    encoder of each data key (a modality without one gets ``default_encoder``)."""

    party: str
    data: Mapping[str, tuple[int, ...]]
    labels: tuple[str, ...] = ()
    encoders: Mapping[str, EncoderSpec] = field(default_factory=dict)

    def encoder(self, key: str) -> EncoderSpec:
        return self.encoders.get(key) or default_encoder(self.data[key])


@dataclass(frozen=True)
class TaskSpec:
    """A task on a label: ``binary`` (one logit), ``multiclass`` (``classes`` logits) or ``regression``
    (``outputs`` values). ``head`` options the task's head (an MLP: ``{"hidden": [32]}``)."""

    name: str
    label: str
    kind: Literal["binary", "multiclass", "regression"] = "binary"
    classes: int = 2
    outputs: int = 1
    head: EncoderSpec | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task '{self.name}' has unknown kind '{self.kind}'",
                              hint=f"use one of: {', '.join(TASK_KINDS)}")
        if self.kind == "multiclass" and self.classes < 2:
            raise ConfigError(f"task '{self.name}' is multiclass with {self.classes} classes",
                              hint="a multiclass task has 2 or more classes")

    @property
    def loss(self) -> str:
        return LOSS_OF[self.kind]

    @property
    def out_features(self) -> int:
        return 1 if self.kind == "binary" else self.classes if self.kind == "multiclass" else self.outputs


@dataclass(frozen=True)
class StudySpec:
    """The sites and tasks of a study. Each task's label is owned by the sites that list it."""

    sites: tuple[SiteSpec, ...]
    tasks: tuple[TaskSpec, ...]

    def owners(self, label: str) -> list[str]:
        return [s.party for s in self.sites if label in s.labels]
