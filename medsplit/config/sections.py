"""The sections of a validated experiment: topology, training, server, each site and each task."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from ..errors import ConfigError
from ..suggest import did_you_mean
from ..topology.encoders import EncoderSpec
from ..topology.presets import KNOBS, MERGE_KNOB, PRESETS, PresetConfig
from ..topology.study import TaskSpec
from ..wire.codecs import codec_chain
from .loader import StrictModel, one_of, problem

__all__ = ["TopologyConfig", "TrainingConfig", "ServerConfig", "SiteEntry", "TaskEntry", "PositiveInt", "Text",
           "Seconds", "Device"]

def _device(value: str) -> str:
    try:
        torch.device(value)
    except RuntimeError:
        raise problem(f"'{value}' is not a device", "write cpu, cuda or cuda:N") from None
    return value


PositiveInt = Annotated[StrictInt, Field(ge=1)]
Device = Annotated[StrictStr, AfterValidator(_device)]
Text = Annotated[StrictStr, Field(min_length=1)]
Seconds = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]
_PRESET = PresetConfig()  # the knobs' defaults are the presets' own


class TopologyConfig(StrictModel):
    """The preset and the knobs of ``PresetConfig`` it reads (setting a knob it does not read is an error), or
    the study's own ``factory`` (``package.module:build``, given the study and every knob)."""

    preset: StrictStr = Field("", examples=["vertical"])
    factory: Text | None = Field(None, examples=["mystudy.topologies:build"])
    ushaped: StrictBool = _PRESET.ushaped
    merge: Annotated[StrictStr, AfterValidator(one_of(MERGE_KNOB))] = _PRESET.merge
    nopeek: Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)] = _PRESET.nopeek
    hops: PositiveInt = _PRESET.hops
    servers: PositiveInt = _PRESET.servers
    cut_features: PositiveInt = _PRESET.cut_features
    hidden: PositiveInt = _PRESET.hidden
    channels: Annotated[tuple[PositiveInt, ...], Field(min_length=1, examples=[[8, 16]])] = _PRESET.channels
    #: cut tensors encoded on the wire, per edge ("*": every cut edge): a chain for both directions, or one per
    #: kind (``medsplit.wire.codecs``); edge names are checked against the built topology
    codecs: dict[StrictStr, list[StrictStr] | dict[StrictStr, list[StrictStr]]] = Field(
        {}, examples=[{"*": ["int8"]}, {"*": ["topk:0.1", "int8"]}])

    @field_validator("preset")
    @classmethod
    def _known(cls, name: str) -> str:
        if name and name not in PRESETS:
            raise problem(f"unknown preset '{name}'{did_you_mean(name, PRESETS)}", f"use one of: {', '.join(PRESETS)}")
        return name

    @field_validator("factory")
    @classmethod
    def _reference(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            if info.data.get("preset"):
                raise problem("preset and factory are both set", "keep one: a preset, or the study's own factory")
            module, sep, attr = value.partition(":")
            if not sep or not module or not attr:
                raise problem(f"'{value}' is not package.module:function", "write e.g. mystudy.topologies:build")
        return value

    @field_validator("codecs")
    @classmethod
    def _codec_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for edge, chain in value.items():
            for kind, names in (chain.items() if isinstance(chain, dict) else [("", chain)]):
                if kind and kind not in ("activation", "gradient"):
                    raise problem(f"codecs for '{edge}' name '{kind}'", "give a chain for activation and/or gradient")
                try:
                    codec_chain(names)
                except ConfigError as exc:
                    raise problem(f"codecs for '{edge}': {exc.message}", exc.hint or "") from None
        return value

    @field_validator(*KNOBS)
    @classmethod
    def _read_by_the_preset(cls, value: Any, info: ValidationInfo) -> Any:
        preset = info.data.get("preset")
        if preset in PRESETS and info.field_name not in PRESETS[preset].knobs:
            raise problem(f"preset '{preset}' does not read '{info.field_name}'; it reads "
                          f"{', '.join(PRESETS[preset].knobs)}",
                          f"delete '{info.field_name}', or choose a preset that reads it")
        return value


class TrainingConfig(StrictModel):
    """How every party trains; timeouts are seconds, generous because a 3D activation batch is large."""

    epochs: PositiveInt = 5
    batch_size: PositiveInt = 32
    lr: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] = 1e-3
    checkpoint_every: PositiveInt = 20
    timeout: Seconds = 120.0
    rejoin_timeout: Seconds = 600.0
    #: > 1 pipelines each step over this many micro-batches (``Plan.step_ops``)
    micro_batches: PositiveInt = 1


class ServerConfig(StrictModel):
    """Where the host party listens; ``run_dir`` is absolute."""

    host: str
    port: int
    run_dir: Path
    device: str = "cpu"  # where the server and relay parties compute


class SiteEntry(StrictModel):
    """One site as the experiment knows it: no data, only shapes, encoders, label names and how it proves who
    it is."""

    name: str
    party: str
    config: Path | None
    shapes: dict[str, tuple[int, ...]]
    encoders: dict[str, EncoderSpec] = {}
    labels: tuple[str, ...] = ()
    defenses: tuple[tuple[str, float | None], ...] = ()  # (registry name, strength), in the order applied
    secret_env: str | None = None
    secret_file: Path | None = None
    public_key: Path | None = None
    device: str = "cpu"  # where this site's segments compute; not part of the digest (a site's own choice)

    def secret(self) -> bytes | None:
        """The shared secret, from the environment variable or the file named in the experiment."""
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ConfigError(f"site '{self.name}': environment variable {self.secret_env} is not set",
                                  hint=f"export {self.secret_env}=<the secret shared with this site>")
            return value.encode()
        if self.secret_file:
            try:
                return self.secret_file.read_bytes().strip()
            except OSError as exc:
                raise ConfigError(f"site '{self.name}': cannot read secret_file {self.secret_file}: {exc.strerror}",
                                  hint="give the path of the file that holds this site's secret") from exc
        return None


class TaskEntry(StrictModel):
    """A task of the experiment: its label, kind and (multiclass) classes or (regression) outputs."""

    name: str
    label: str
    kind: str = "binary"
    classes: int = 2
    outputs: int = 1
    head: EncoderSpec | None = None

    def spec(self) -> TaskSpec:
        return TaskSpec(self.name, self.label, self.kind, self.classes, self.outputs, self.head)  # type: ignore[arg-type]
