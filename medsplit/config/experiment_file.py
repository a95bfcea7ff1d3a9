"""What an experiment file may say, key by key, with bounds: the models a file is validated against."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)

from ..topology.defenses import DEFENSES, LABEL_DEFENSES
from ..topology.encoders import ENCODERS, OPTIONS, EncoderSpec
from ..topology.study import TASK_KINDS
from .loader import StrictModel, one_of, problem
from .sections import Device, PositiveInt, Text, TrainingConfig

__all__ = ["EncoderFile", "ModalityFile", "TaskFile", "SiteFile", "ServerFile", "ExperimentFile"]

class EncoderFile(StrictModel):
    """The network of one data key: a kind of the family and its options (``module`` for ``kind: module``)."""

    kind: Annotated[StrictStr, AfterValidator(one_of(tuple(ENCODERS)))] = Field(examples=["resnet"])
    hidden: tuple[PositiveInt, ...] | None = None
    channels: tuple[PositiveInt, ...] | None = None
    layers: tuple[PositiveInt, ...] | None = None
    planes: tuple[PositiveInt, ...] | None = None
    init_features: PositiveInt | None = None
    growth_rate: PositiveInt | None = None
    blocks: tuple[PositiveInt, ...] | None = None
    module: Text | None = Field(None, examples=["mystudy.models:encoder"])

    @model_validator(mode="after")
    def _options_of_its_kind(self) -> EncoderFile:
        given = [k for k in type(self).model_fields if k != "kind" and getattr(self, k) is not None]
        foreign = [k for k in given if k not in OPTIONS[self.kind]]
        if foreign:
            raise problem(f"encoder '{self.kind}' has no option '{foreign[0]}'",
                          f"its options are: {', '.join(OPTIONS[self.kind])}")
        if self.kind == "module" and self.module is None:
            raise problem("encoder 'module' needs module: package.module:factory",
                          "name the factory every party has installed, e.g. module: mystudy.models:encoder")
        return self

    def spec(self) -> EncoderSpec:
        return EncoderSpec(self.kind, {k: list(v) if isinstance(v, tuple) else v for k in OPTIONS[self.kind]
                                       if (v := getattr(self, k)) is not None})


class ModalityFile(StrictModel):
    """One data key of a site: the per-sample shape its pipeline produces, its encoder (kind and modality: what
    the site's file is, for the dashboard)."""

    shape: Annotated[tuple[PositiveInt, ...], Field(
        min_length=1, max_length=4, description="the per-sample shape the site's pipeline produces: [F] for a "
                                                "table, [C, H, W] or [C, D, H, W] for an image")]
    kind: Literal["dicom", "table"] | None = None
    modality: Text | None = None
    encoder: EncoderFile | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModalityFile:
        if self.modality is not None and self.kind == "table":
            raise problem(f"modality: {self.modality} is set on a table", "delete 'modality' (DICOM keys only)")
        if self.kind == "table" and len(self.shape) != 1:
            raise problem(f"a table's per-sample shape is [F], not {list(self.shape)}",
                          "write shape: [number of feature columns after encoding]")
        if self.kind == "dicom" and len(self.shape) not in (3, 4):
            raise problem(f"an image's per-sample shape is [C, H, W] or [C, D, H, W], not {list(self.shape)}",
                          "write the channels first, e.g. shape: [1, 64, 64]")
        if len(self.shape) == 2:
            raise problem(f"{list(self.shape)} is neither a table [F] nor an image [C, H, W] / [C, D, H, W]",
                          "put the channels first: a 2D grey image of 64x64 is [1, 64, 64]")
        return self


class TaskFile(StrictModel):
    label: Text | None = Field(None, description="the label column (default: the task's name)")
    kind: Annotated[StrictStr, AfterValidator(one_of(TASK_KINDS))] = "binary"
    classes: Annotated[StrictInt, Field(ge=2)] | None = None
    outputs: PositiveInt | None = None
    head: EncoderFile | None = None

    @model_validator(mode="after")
    def _fits_the_kind(self) -> TaskFile:
        if self.kind == "multiclass" and self.classes is None:
            raise problem("a multiclass task needs classes: N", "write classes: N (the labels are 0..N-1 after "
                                                               "the site's mapping)")
        if self.kind != "multiclass" and self.classes is not None:
            raise problem(f"classes is set on a {self.kind} task", "delete classes, or make the task multiclass")
        if self.kind != "regression" and self.outputs is not None:
            raise problem(f"outputs is set on a {self.kind} task", "delete outputs (regression tasks only)")
        if self.head is not None and self.head.kind != "mlp":
            raise problem(f"a task's head is an mlp, not '{self.head.kind}'", "write head: {kind: mlp, hidden: [32]}")
        return self


class DefenseFile(StrictModel):
    """A defense a site applies (medsplit.topology.defenses.DEFENSES): where it acts follows from what it is."""

    name: Annotated[StrictStr, AfterValidator(one_of(tuple(DEFENSES)))] = Field(examples=["noise"])
    strength: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _strength(self) -> DefenseFile:
        if self.strength is None and self.name not in LABEL_DEFENSES:
            raise problem(f"defense '{self.name}' needs a strength ({DEFENSES[self.name][1]})",
                          f"write {{name: {self.name}, strength: 1.0}}")
        return self


class SiteFile(StrictModel):
    unused_keys = {"patients": "a site counts its patients from its own files"}

    name: Text = Field(examples=["hospital_1"])
    party: Text | None = None
    config: Text | None = None
    modalities: Annotated[dict[StrictStr, ModalityFile], Field(min_length=1,
                                                            examples=[{"image": {"shape": [1, 32, 32]}}])]
    labels: tuple[StrictStr, ...] = ()
    defenses: tuple[DefenseFile, ...] = ()
    secret_env: Text | None = None
    secret_file: Text | None = None
    public_key: Text | None = None
    device: Device = "cpu"

    @model_validator(mode="after")
    def _one_secret(self) -> SiteFile:
        if self.secret_env and self.secret_file:
            raise problem("secret_env and secret_file are both set", "keep one of them")
        return self


class ServerFile(StrictModel):
    host: Text = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=0, le=65535)] = 29500
    run_dir: Text | None = None
    device: Device = "cpu"


class ExperimentFile(StrictModel):
    unused_keys = {"layout": "topology.preset says how the data is laid out",
                   "split": "each site's own YAML sets its split",
                   "labels": "each site lists the labels it holds in sites[].labels",
                   "alignment": "vertical presets align patients by private set intersection",
                   "synth": "nothing reads how a synthetic cohort was made"}

    experiment: Text = Field(examples=["my-study"])
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    topology: dict[StrictStr, Any] | None = None  # a TopologyConfig once the preset is known
    tasks: dict[StrictStr, TaskFile] | None = None
    training: TrainingConfig = TrainingConfig()
    server: ServerFile = ServerFile()
    sites: Annotated[tuple[SiteFile, ...], Field(min_length=1, examples=[[{"name": "hospital_1"}]])]
