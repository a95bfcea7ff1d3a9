"""The experiment YAML: which sites take part, which topology, how to train, where the server listens.

`medsplit synth` writes one; `medsplit server`, `medsplit run` and the dashboard read it. Paths are
relative to the experiment file. Every key is read by something; an unknown or unused key is an error.

    experiment: NAME
    seed: 0
    topology: {preset: vertical, ushaped: false, merge: concat, nopeek: 0.0}   # only knobs the preset reads
    training: {epochs: 5, batch_size: 32, lr: 0.001, checkpoint_every: 20, timeout: 120, rejoin_timeout: 600}
    server: {host: 127.0.0.1, port: 29500, run_dir: runs/NAME}
    sites:
      - name: site_1
        config: site_1/site.yaml          # the site's own YAML (used by `medsplit run` on one machine)
        party: imaging                    # its place in the topology (default: from the preset, see below)
        modalities: {image: {shape: [1, 32, 32], kind: dicom, modality: CT}}   # kind, modality: for the dashboard
        labels: []
        secret_env: MEDSPLIT_SECRET_SITE_1    # or secret_file: PATH; and/or public_key: PATH (Ed25519)

What a preset needs comes from the preset registry (``medsplit.topology.presets.PRESETS``): how many sites it
takes, which knobs it reads, its site parties and the data each holds. Without ``topology.preset`` the preset is
the first in the registry that takes the sites as declared; a site without ``party`` gets the first of the
preset's site parties, in the registry's order, that no other site has and whose data the site declares.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import (AfterValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationInfo,
                      field_validator, model_validator)

from ..errors import ConfigError
from ..suggest import did_you_mean
from ..topology.model import Topology
from ..topology.presets import DATA_RANKS, KNOBS, MERGE_KNOB, PRESETS, PresetConfig, PresetSpec, build_preset
from .loader import StrictModel, config_error, load_yaml, one_of, problem, validate

__all__ = ["Experiment", "SiteEntry", "TrainingConfig", "ServerConfig", "TopologyConfig", "load_experiment",
           "parse_experiment", "dump_experiment"]

PositiveInt = Annotated[StrictInt, Field(ge=1)]
Text = Annotated[StrictStr, Field(min_length=1)]
Seconds = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]
_PRESET = PresetConfig()  # the knobs' defaults are the presets' own


class TopologyConfig(StrictModel):
    """The preset and the knobs of ``PresetConfig`` it reads; setting a knob it does not read is an error."""

    preset: StrictStr = Field(examples=["vertical"])
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
        if name not in PRESETS:
            raise problem(f"unknown preset '{name}'{did_you_mean(name, PRESETS)}", f"use one of: {', '.join(PRESETS)}")
        return name

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
    """One site as the experiment knows it: no data, only shapes, label names and how it proves who it is."""

    name: str
    party: str
    config: Path | None
    shapes: dict[str, tuple[int, ...]]
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


# --- what the file says ------------------------------------------------------------------------------


class _Modality(StrictModel):
    """One data key of a site: the per-sample shape its pipeline produces (kind and modality: the dashboard's)."""

    shape: Annotated[tuple[PositiveInt, ...], Field(
        min_length=1, description="the per-sample shape the site's pipeline produces, e.g. [1, 32, 32] or [12]")]
    kind: Literal["dicom", "table"] | None = None
    modality: Text | None = None

    @model_validator(mode="after")
    def _dicom_only(self) -> _Modality:
        if self.modality is not None and self.kind == "table":
            raise problem(f"modality: {self.modality} is set on a table", "delete 'modality' (DICOM keys only)")
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
        """What every party must agree on before training together: topology, training and sites (not paths)."""
        spec = {"name": self.name, "seed": self.seed, "topology": self.topology.model_dump(),
                "training": self.training.model_dump(),
                "sites": [(s.name, s.party, {k: list(v) for k, v in s.shapes.items()}, list(s.labels))
                          for s in self.sites]}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def alignment_context(self) -> bytes:
        """Names the study for patient alignment: the same in every run of it, in-process or as nodes."""
        return f"{self.name}|{self.seed}".encode()

    def preset_config(self) -> PresetConfig:
        """Shapes come from the sites' declared modalities (the same at every site); every party builds the same."""
        t = self.topology
        shapes = {k: v for s in self.sites for k, v in s.shapes.items()}
        cfg = PresetConfig(sites=len(self.sites), ushaped=t.ushaped, merge=t.merge, nopeek=t.nopeek, hops=t.hops,
                           servers=t.servers, cut_features=t.cut_features, hidden=t.hidden, channels=t.channels)
        if "image" in shapes:
            cfg.image_shape = tuple(shapes["image"])
        if "ehr" in shapes:
            cfg.ehr_features = int(shapes["ehr"][0])
        return cfg

    def build_topology(self) -> Topology:
        """The topology, with weights initialised from the experiment's seed (identical in every process)."""
        torch.manual_seed(self.seed)
        topology = build_preset(self.topology.preset, self.preset_config())
        built, mine = sorted(p.name for p in topology.parties if p.data), sorted(s.party for s in self.sites)
        if built != mine:  # the preset's default study, built from the declared shapes, has other sites
            raise config_error(self.path, "sites", f"preset '{self.topology.preset}' builds site parties {built}, "
                               f"but the sites map to {mine}", f"list one site for each of: {', '.join(built)}")
        return topology


def _resolve(base: Path, value: str | None) -> Path | None:
    return None if value is None else base / value


def _parties(spec: PresetSpec, sites: Sequence[_Site], path: Path | None) -> list[str]:
    """Each site's party: its own, or the preset's first free party whose data it declares; all distinct."""
    n = len(sites)
    if not spec.takes(n):
        others = ", ".join(p for p, s in PRESETS.items() if s.takes(n))
        raise config_error(path, "sites", f"preset '{spec.name}' takes {spec.sites_wanted}, got {n}",
                           f"list {spec.sites_wanted} (delete the others)"
                           + (f", or choose a preset that takes {n}: {others}" if others else ""))
    order = spec.site_parties(n)
    holds = {party: set(keys) for party, (keys, _labels) in spec.site_data(n).items()}
    for i, s in enumerate(sites):
        if s.party is not None and s.party not in holds:
            raise config_error(path, f"sites[{i}].party", f"'{s.party}' is not a site party of preset "
                               f"'{spec.name}'{did_you_mean(s.party, order)}", f"use one of: {', '.join(order)}")
    taken: dict[str, int] = {}  # party -> the site that has it
    explicit = {s.party for s in sites if s.party is not None}
    for i, s in enumerate(sites):
        free = [p for p in order if p not in taken and p not in explicit]
        party = s.party or next((p for p in free if holds[p] <= set(s.modalities)), None)
        if party is None:
            held = "; ".join(f"{p}: {', '.join(sorted(holds[p]))}" for p in free)
            raise config_error(path, f"sites[{i}].party", f"no free site party of preset '{spec.name}' holds only "
                               f"data this site declares ({', '.join(s.modalities)}); free parties hold: "
                               f"{held or 'none left'}", f"set each site's party to one of: {', '.join(order)} "
                               "(each once), with the data that party holds declared under modalities")
        if party in taken:
            j = taken[party]
            raise config_error(path, f"sites[{i}].party", f"'{party}' is also the party of sites[{j}] "
                               f"('{sites[j].name}'); preset '{spec.name}' needs one site per party",
                               f"give each site its own party: {', '.join(order)}")
        missing = sorted(holds[party] - set(s.modalities))
        if missing:
            raise config_error(path, f"sites[{i}].modalities", f"party '{party}' of preset '{spec.name}' holds "
                               f"{', '.join(missing)}, which this site does not declare",
                               f"declare it, e.g. {missing[0]}: {{shape: [...]}}, or give the site another party")
        taken[party] = i
    return sorted(taken, key=taken.__getitem__)


def _check_sites(sites: Sequence[_Site], path: Path | None) -> None:
    """Names are unique; a data key has the shape the presets' encoders take, the same at every site."""
    names: dict[str, int] = {}
    shapes: dict[str, tuple[int, tuple[int, ...]]] = {}
    for i, s in enumerate(sites):
        if s.name in names:
            raise config_error(path, f"sites[{i}].name", f"'{s.name}' is also the name of sites[{names[s.name]}]",
                               "give every site its own name")
        names[s.name] = i
        for key, m in s.modalities.items():
            where = f"sites[{i}].modalities.{key}.shape"
            ranks, written = DATA_RANKS.get(key, ((len(m.shape),), ""))
            if len(m.shape) not in ranks:
                raise config_error(path, where, f"{list(m.shape)} has {len(m.shape)} number"
                                   f"{'s' if len(m.shape) > 1 else ''}; a '{key}' sample is {written}",
                                   f"write the per-sample shape as {written}")
            if key in shapes and shapes[key][1] != m.shape:
                j, other = shapes[key]
                raise config_error(path, where, f"{list(m.shape)} differs from sites[{j}]'s {list(other)}",
                                   f"declare the same '{key}' shape at every site: one network reads them all")
            shapes.setdefault(key, (i, m.shape))


def _default_preset(sites: Sequence[_Site], path: Path | None) -> str:
    """The first preset in the registry that takes these sites with the data (and parties) they declare."""
    first: tuple[str, ConfigError] | None = None
    for name, spec in PRESETS.items():
        if spec.takes(len(sites)):
            try:
                _parties(spec, sites, path)
            except ConfigError as exc:
                first = first or (name, exc)
                continue
            return name
    if first is None:
        raise config_error(path, "topology.preset", f"is not set, and no preset takes {len(sites)} sites",
                           f"add topology: {{preset: NAME}}, NAME one of: {', '.join(PRESETS)}")
    name, misfit = first
    raise ConfigError(f"{misfit.message} (topology.preset is not set, and no preset fits the sites as declared; "
                      f"'{name}' is the first that takes {len(sites)})",
                      hint=f"{misfit.hint}; or set topology: {{preset: NAME}}") from None


def parse_experiment(data: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Experiment:
    """Validate a parsed experiment YAML; ``path`` names the file in errors and anchors relative paths."""
    path = Path(path) if path is not None else None
    base = path.parent if path is not None else Path.cwd()
    doc = validate(_ExperimentFile, data, path)
    _check_sites(doc.sites, path)
    topology = dict(doc.topology or {})
    if "preset" not in topology:
        topology["preset"] = _default_preset(doc.sites, path)
    topo = validate(TopologyConfig, topology, path, prefix="topology")
    parties = _parties(PRESETS[topo.preset], doc.sites, path)
    sites = tuple(SiteEntry(name=s.name, party=party, config=_resolve(base, s.config),
                            shapes={k: m.shape for k, m in s.modalities.items()}, labels=s.labels,
                            secret_env=s.secret_env, secret_file=_resolve(base, s.secret_file),
                            public_key=_resolve(base, s.public_key))
                  for s, party in zip(doc.sites, parties, strict=True))
    server = ServerConfig(host=doc.server.host, port=doc.server.port,
                          run_dir=base / (doc.server.run_dir or Path("runs") / doc.experiment))
    return Experiment(name=doc.experiment, seed=doc.seed, topology=topo, training=doc.training, server=server,
                      sites=sites, path=path, raw=data)


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read and validate an experiment YAML (a key given twice is refused)."""
    data = load_yaml(path, "experiment file",
                     example="write one with `medsplit synth --out DIR` or copy one from experiments/")
    return parse_experiment(data, Path(path).resolve())


def dump_experiment(data: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write an experiment mapping (validated first), so that what the dashboard saves always loads."""
    parse_experiment(data, Path(path).resolve())
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False))
