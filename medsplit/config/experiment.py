"""The experiment YAML: which sites take part, which topology, how to train, where the server listens.

`medsplit synth` writes one; `medsplit server`, `medsplit run` and the dashboard read it. Paths are
relative to the experiment file. Every key is read by something; an unknown or unused key is an error.

    experiment: NAME
    seed: 0
    topology: {preset: vertical, ushaped: false, merge: concat, nopeek: 0.0}   # only knobs the preset reads
    # or topology: {factory: mystudy.topologies:build, ...knobs}: a topology built by the study's own code
    training: {epochs: 5, batch_size: 32, lr: 0.001, checkpoint_every: 20, timeout: 120, rejoin_timeout: 600}
    server: {host: 127.0.0.1, port: 29500, run_dir: runs/NAME}
    tasks:                                # optional: one binary task per label the preset uses, by default
      diagnosis: {kind: binary}           # binary | multiclass (classes: N) | regression (outputs: N)
      grade: {label: tumour_grade, kind: multiclass, classes: 3, head: {hidden: [16]}}
    sites:
      - name: site_1
        config: site_1/site.yaml          # the site's own YAML (used by `medsplit run` on one machine)
        party: imaging                    # its name in the topology (default: the site's name)
        modalities:                       # any mix: tables [F], 2D images [C, H, W], 3D images [C, D, H, W]
          image: {shape: [1, 32, 32], kind: dicom, modality: CT, encoder: {kind: resnet}}
          labs: {shape: [15], kind: table}                      # encoder by default: mlp (tables), cnn (images)
        labels: []
        secret_env: MEDSPLIT_SECRET_SITE_1    # or secret_file: PATH; and/or public_key: PATH (Ed25519)

What a preset needs comes from the preset registry (``medsplit.topology.presets.PRESETS``): how many sites it
takes and which knobs it reads. Without ``topology.preset`` one site means vanilla, sites that hold the same
data mean horizontal, and sites that hold different data of the same patients mean vertical. Encoders are
``mlp``, ``cnn``, ``resnet``, ``densenet`` (MONAI) or ``module`` (``{kind: module, module: pkg.mod:factory}``,
loaded by every party from its own installed code).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import (AfterValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationInfo,
                      field_validator, model_validator)

from ..errors import ConfigError, MedsplitError
from ..suggest import did_you_mean
from ..topology.encoders import ENCODERS, OPTIONS, EncoderSpec, load_factory
from ..topology.model import Topology
from ..topology.presets import KNOBS, MERGE_KNOB, PRESETS, PresetConfig, build_preset, preset_spec
from ..topology.study import TASK_KINDS, SiteSpec, StudySpec, TaskSpec
from .loader import StrictModel, config_error, load_yaml, one_of, problem, validate

__all__ = ["Experiment", "SiteEntry", "TrainingConfig", "ServerConfig", "TopologyConfig", "load_experiment",
           "parse_experiment", "dump_experiment"]

PositiveInt = Annotated[StrictInt, Field(ge=1)]
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


class ServerConfig(StrictModel):
    """Where the host party listens; ``run_dir`` is absolute."""

    host: str
    port: int
    run_dir: Path


class SiteEntry(StrictModel):
    """One site as the experiment knows it: no data, only shapes, encoders, label names and how it proves who
    it is."""

    name: str
    party: str
    config: Path | None
    shapes: dict[str, tuple[int, ...]]
    encoders: dict[str, EncoderSpec] = {}
    labels: tuple[str, ...] = ()
    secret_env: str | None = None
    secret_file: Path | None = None
    public_key: Path | None = None

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


# --- what the file says ------------------------------------------------------------------------------


class _Encoder(StrictModel):
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
    def _options_of_its_kind(self) -> _Encoder:
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


class _Modality(StrictModel):
    """One data key of a site: the per-sample shape its pipeline produces, its encoder (kind and modality: what
    the site's file is, for the dashboard)."""

    shape: Annotated[tuple[PositiveInt, ...], Field(
        min_length=1, max_length=4, description="the per-sample shape the site's pipeline produces: [F] for a "
                                                "table, [C, H, W] or [C, D, H, W] for an image")]
    kind: Literal["dicom", "table"] | None = None
    modality: Text | None = None
    encoder: _Encoder | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _Modality:
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


class _Task(StrictModel):
    label: Text | None = Field(None, description="the label column (default: the task's name)")
    kind: Annotated[StrictStr, AfterValidator(one_of(TASK_KINDS))] = "binary"
    classes: Annotated[StrictInt, Field(ge=2)] | None = None
    outputs: PositiveInt | None = None
    head: _Encoder | None = None

    @model_validator(mode="after")
    def _fits_the_kind(self) -> _Task:
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


class _Site(StrictModel):
    unused_keys = {"patients": "a site counts its patients from its own files"}

    name: Text = Field(examples=["hospital_1"])
    party: Text | None = None
    config: Text | None = None
    modalities: Annotated[dict[StrictStr, _Modality], Field(min_length=1,
                                                            examples=[{"image": {"shape": [1, 32, 32]}}])]
    labels: tuple[StrictStr, ...] = ()
    secret_env: Text | None = None
    secret_file: Text | None = None
    public_key: Text | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> _Site:
        if self.secret_env and self.secret_file:
            raise problem("secret_env and secret_file are both set", "keep one of them")
        return self


class _Server(StrictModel):
    host: Text = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=0, le=65535)] = 29500
    run_dir: Text | None = None


class _ExperimentFile(StrictModel):
    unused_keys = {"layout": "topology.preset says how the data is laid out",
                   "split": "each site's own YAML sets its split",
                   "labels": "each site lists the labels it holds in sites[].labels",
                   "alignment": "vertical presets align patients by private set intersection",
                   "synth": "nothing reads how a synthetic cohort was made"}

    experiment: Text = Field(examples=["my-study"])
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    topology: dict[StrictStr, Any] | None = None  # a TopologyConfig once the preset is known
    tasks: dict[StrictStr, _Task] | None = None
    training: TrainingConfig = TrainingConfig()
    server: _Server = _Server()
    sites: Annotated[tuple[_Site, ...], Field(min_length=1, examples=[[{"name": "hospital_1"}]])]


# --- the experiment ------------------------------------------------------------------------------------


class Experiment(StrictModel):
    """A validated experiment: every default filled in from the preset registry, every path absolute."""

    name: str
    seed: int
    topology: TopologyConfig
    training: TrainingConfig
    server: ServerConfig
    sites: tuple[SiteEntry, ...]
    tasks: tuple[TaskEntry, ...] = ()
    path: Path | None = None
    raw: Mapping[str, Any] = Field(default_factory=dict, repr=False, exclude=True)

    def site(self, name: str) -> SiteEntry:
        for s in self.sites:
            if s.name == name:
                return s
        names = [s.name for s in self.sites]
        raise ConfigError(f"experiment '{self.name}' has no site '{name}'{did_you_mean(name, names)}",
                          hint=f"its sites are: {', '.join(names)}")

    def digest(self) -> str:
        """What every party must agree on before training together: topology, tasks, training and sites (not
        paths or addresses)."""
        spec: dict[str, Any] = {
            "name": self.name, "seed": self.seed, "topology": self.topology.model_dump(),
            "training": self.training.model_dump(),
            "sites": [(s.name, s.party, {k: list(v) for k, v in s.shapes.items()}, list(s.labels))
                      for s in self.sites]}
        # Added only when used, so that the digests (run ids, checkpoints) of earlier experiments stay the same.
        encoders = {s.name: {k: e.describe() for k, e in s.encoders.items()} for s in self.sites if s.encoders}
        if encoders:
            spec["encoders"] = encoders
        if self.tasks != self._default_tasks():
            spec["tasks"] = [t.model_dump() for t in self.tasks]
        if not spec["topology"].get("factory"):
            spec["topology"].pop("factory", None)
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _default_tasks(self) -> tuple[TaskEntry, ...]:
        return default_tasks(self.topology.preset, [s.labels for s in self.sites])

    def study(self) -> StudySpec:
        """The sites (their data, labels and encoders) and tasks every party builds the topology from."""
        sites = tuple(SiteSpec(s.party, dict(s.shapes), s.labels, dict(s.encoders)) for s in self.sites)
        return StudySpec(sites, tuple(t.spec() for t in self.tasks))

    def alignment_context(self) -> bytes:
        """Names the study for patient alignment: the same in every run of it, in-process or as nodes."""
        return f"{self.name}|{self.seed}".encode()

    def preset_config(self) -> PresetConfig:
        """The topology's knobs, as every party builds it."""
        t = self.topology
        return PresetConfig(sites=len(self.sites), ushaped=t.ushaped, merge=t.merge, nopeek=t.nopeek, hops=t.hops,
                            servers=t.servers, cut_features=t.cut_features, hidden=t.hidden, channels=t.channels)

    def build_topology(self) -> Topology:
        """The topology of this study, weights initialised from the experiment's seed (identical in every
        process). A refusal names this file and what to change in it."""
        torch.manual_seed(self.seed)
        try:
            if self.topology.factory:
                built = load_factory(self.topology.factory, "topology.factory")(self.study(), self.preset_config())
                if not isinstance(built, Topology):
                    raise ConfigError(f"topology.factory '{self.topology.factory}' returned "
                                      f"{type(built).__name__}, not a medsplit Topology",
                                      hint="the factory takes (study, knobs) and returns a Topology")
                return built
            return build_preset(self.topology.preset, self.preset_config(), self.study())
        except MedsplitError as exc:
            where = f"{self.path}: " if self.path else ""
            raise type(exc)(f"{where}{exc.message}", hint=exc.hint) from None


def _resolve(base: Path, value: str | None) -> Path | None:
    return None if value is None else base / value


#: parties the presets create besides the sites: a site may not take one of their names
_RESERVED_PARTY = re.compile(r"^(server|server_\d+|relay_\d+)$")
_PARTY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def default_tasks(preset: str, labels: Sequence[Sequence[str]]) -> tuple[TaskEntry, ...]:
    """Without a ``tasks`` section: a binary task for each label the preset's cohort uses that a site declares
    (diagnosis; multitask: diagnosis and mortality), else one for every label a site declares."""
    declared = list(dict.fromkeys(label for ls in labels for label in ls))
    used = [label for label in default_study_labels(preset) if label in declared] if preset else []
    return tuple(TaskEntry(name=label, label=label) for label in (used or declared))


def default_study_labels(preset: str) -> list[str]:
    spec = PRESETS[preset]
    return list(dict.fromkeys(label for _keys, labels in spec.site_data(spec.min_sites).values()
                              for label in labels))


def _parties(sites: Sequence[_Site], path: Path | None) -> list[str]:
    """Each site's party: its own ``party``, else its name; every one distinct and usable as a party name."""
    parties: dict[str, int] = {}
    for i, s in enumerate(sites):
        party = s.party or s.name
        where = f"sites[{i}].party" if s.party else f"sites[{i}].name"
        if not _PARTY_NAME.match(party):
            raise config_error(path, where, f"'{party}' cannot name a party (letters, digits, '_' and '-' only)",
                               "give the site a party: with such a name")
        if _RESERVED_PARTY.match(party):
            raise config_error(path, where, f"'{party}' is the name of a server or relay party",
                               "give the site another name, or a party: such as hospital_1")
        if party in parties:
            j = parties[party]
            raise config_error(path, where, f"'{party}' is also the party of sites[{j}] ('{sites[j].name}')",
                               "give each site its own party")
        parties[party] = i
    return list(parties)


def _check_sites(sites: Sequence[_Site], path: Path | None) -> None:
    """Site names are unique; a site that owns no label and holds no data is refused by the topology."""
    names: dict[str, int] = {}
    for i, s in enumerate(sites):
        if s.name in names:
            raise config_error(path, f"sites[{i}].name", f"'{s.name}' is also the name of sites[{names[s.name]}]",
                               "give every site its own name")
        names[s.name] = i


def _default_preset(sites: Sequence[_Site]) -> str:
    """One site: vanilla; sites that hold the same data: horizontal; else vertical (different data, the same
    patients)."""
    if len(sites) == 1:
        return "vanilla"
    data = [{k: m.shape for k, m in s.modalities.items()} for s in sites]
    return "horizontal" if all(d == data[0] for d in data) else "vertical"


def _tasks(doc: _ExperimentFile, preset: str, path: Path | None) -> tuple[TaskEntry, ...]:
    if doc.tasks is None:
        tasks = default_tasks(preset, [s.labels for s in doc.sites])
        if not tasks:
            raise config_error(path, "sites", "no site declares a label, so there is nothing to train",
                               "list the label columns a site holds under its labels:, e.g. labels: [diagnosis]")
        return tasks
    if not doc.tasks:
        raise config_error(path, "tasks", "is empty", "name at least one task, e.g. tasks: {diagnosis: {}}")
    declared = {label for s in doc.sites for label in s.labels}
    out = []
    for name, t in doc.tasks.items():
        label = t.label or name
        if label not in declared:
            raise config_error(path, f"tasks.{name}.label" if t.label else f"tasks.{name}",
                               f"label '{label}' is not declared by any site{did_you_mean(label, declared)}",
                               "list it under the labels: of the site that holds it, or set label: to a column a "
                               "site declares")
        out.append(TaskEntry(name=name, label=label, kind=t.kind, classes=t.classes or 2, outputs=t.outputs or 1,
                             head=t.head.spec() if t.head else None))
    return tuple(out)


def parse_experiment(data: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Experiment:
    """Validate a parsed experiment YAML; ``path`` names the file in errors and anchors relative paths."""
    path = Path(path) if path is not None else None
    base = path.parent if path is not None else Path.cwd()
    doc = validate(_ExperimentFile, data, path)
    _check_sites(doc.sites, path)
    topology = dict(doc.topology or {})
    if "preset" not in topology and "factory" not in topology:
        topology["preset"] = _default_preset(doc.sites)
    topo = validate(TopologyConfig, topology, path, prefix="topology")
    if topo.preset:
        spec = preset_spec(topo.preset)
        if not spec.takes(len(doc.sites)):
            others = ", ".join(p for p, s in PRESETS.items() if s.takes(len(doc.sites)))
            raise config_error(path, "sites", f"preset '{spec.name}' takes {spec.sites_wanted}, got "
                               f"{len(doc.sites)}", f"list {spec.sites_wanted}, or choose a preset that takes "
                               f"{len(doc.sites)}: {others}")
    parties = _parties(doc.sites, path)
    sites = tuple(SiteEntry(name=s.name, party=party, config=_resolve(base, s.config),
                            shapes={k: m.shape for k, m in s.modalities.items()},
                            encoders={k: m.encoder.spec() for k, m in s.modalities.items() if m.encoder},
                            labels=s.labels, secret_env=s.secret_env, secret_file=_resolve(base, s.secret_file),
                            public_key=_resolve(base, s.public_key))
                  for s, party in zip(doc.sites, parties, strict=True))
    server = ServerConfig(host=doc.server.host, port=doc.server.port,
                          run_dir=base / (doc.server.run_dir or Path("runs") / doc.experiment))
    return Experiment(name=doc.experiment, seed=doc.seed, topology=topo, training=doc.training, server=server,
                      sites=sites, tasks=_tasks(doc, topo.preset, path), path=path, raw=data)


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read and validate an experiment YAML (a key given twice is refused)."""
    data = load_yaml(path, "experiment file",
                     example="write one with `medsplit synth --out DIR` or copy one from experiments/")
    return parse_experiment(data, Path(path).resolve())


def dump_experiment(data: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write an experiment mapping (validated first), so that what the dashboard saves always loads."""
    parse_experiment(data, Path(path).resolve())
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False))
