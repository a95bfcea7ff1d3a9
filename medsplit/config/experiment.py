"""The experiment YAML: which sites take part, which topology, how to train, where the server listens.

`medsplit synth` writes one; `medsplit server`, `medsplit run` and the dashboard read it. Paths are
relative to the experiment file. Every key is read by something; an unknown or unused key is an error.

    experiment: NAME
    seed: 0
    topology: {preset: vertical, ushaped: false, merge: concat, nopeek: 0.0}   # only knobs the preset reads
    # or topology: {factory: mystudy.topologies:build, ...knobs}: a topology built by the study's own code
    # codecs encode cut tensors on the wire, per edge or "*" (fp16, bf16, int8, topk:F; e.g. [topk:0.1, int8])
    # topology: {preset: vanilla, codecs: {"*": [int8]}}
    training: {epochs: 5, batch_size: 32, lr: 0.001, checkpoint_every: 20, timeout: 120, rejoin_timeout: 600,
               micro_batches: 1}             # micro_batches > 1 pipelines each step over the parties
    server: {host: 127.0.0.1, port: 29500, run_dir: runs/NAME, device: cpu}   # servers' and relays' device
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
        defenses: [{name: noise, strength: 1.0}]    # optional: clip, noise, nopeek; max_norm, marvell
        secret_env: MEDSPLIT_SECRET_SITE_1    # or secret_file: PATH; and/or public_key: PATH (Ed25519)
        device: cpu                           # or cuda, cuda:N: where this site's segments compute

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import Field

from ..data import Declared
from ..errors import ConfigError, MedsplitError
from ..suggest import did_you_mean
from ..topology.defenses import defend, make_defense
from ..topology.encoders import load_factory
from ..topology.model import Topology
from ..topology.presets import PRESETS, PresetConfig, build_preset, preset_spec
from ..topology.study import SiteSpec, StudySpec
from .experiment_file import ExperimentFile, SiteFile
from .loader import StrictModel, config_error, load_yaml, validate
from .sections import ServerConfig, SiteEntry, TaskEntry, TopologyConfig, TrainingConfig

__all__ = ["Experiment", "SiteEntry", "TrainingConfig", "ServerConfig", "TopologyConfig", "load_experiment",
           "parse_experiment", "dump_experiment"]


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
        defenses = {s.name: [list(d) for d in s.defenses] for s in self.sites if s.defenses}
        if defenses:
            spec["defenses"] = defenses
        if self.tasks != self._default_tasks():
            spec["tasks"] = [t.model_dump() for t in self.tasks]
        if not spec["topology"].get("factory"):
            spec["topology"].pop("factory", None)
        if not spec["topology"].get("codecs"):
            spec["topology"].pop("codecs", None)
        if spec["training"].get("micro_batches") == 1:
            spec["training"].pop("micro_batches")
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _default_tasks(self) -> tuple[TaskEntry, ...]:
        return default_tasks(self.topology.preset, [s.labels for s in self.sites])

    def study(self) -> StudySpec:
        """The sites (their data, labels and encoders) and tasks every party builds the topology from."""
        sites = tuple(SiteSpec(s.party, dict(s.shapes), s.labels, dict(s.encoders)) for s in self.sites)
        return StudySpec(sites, tuple(t.spec() for t in self.tasks))

    def declared(self) -> Declared:
        """This file as the source of what each site must hold, for the data check's fixes."""
        return Declared(f"experiment '{self.name}'", str(self.path) if self.path else None,
                        {s.party: (s.name, i) for i, s in enumerate(self.sites)})

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
            else:
                built = build_preset(self.topology.preset, self.preset_config(), self.study())
            return self._placed(self._defended(built))
        except MedsplitError as exc:
            where = f"{self.path}: " if self.path else ""
            raise type(exc)(f"{where}{exc.message}", hint=exc.hint) from None

    def _defended(self, topology: Topology) -> Topology:
        """Each site's ``defenses:`` where they act (``medsplit.topology.defend``)."""
        for site in self.sites:
            if site.defenses:
                try:
                    topology = defend(topology, {site.party: [make_defense(n, v) for n, v in site.defenses]})
                except ConfigError as exc:
                    raise ConfigError(f"site '{site.name}' defenses: {exc.message}", hint=exc.hint) from None
        return topology

    def _placed(self, topology: Topology) -> Topology:
        """The topology with this experiment's codecs and each party's device (sites: their own ``device``;
        servers and relays: the server's)."""
        devices = {s.party: s.device for s in self.sites}
        topology.parties = [replace(p, device=devices.get(p.name, self.server.device)) for p in topology.parties]
        if self.topology.codecs:
            topology.codecs = dict(self.topology.codecs)
        return topology


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


def _parties(sites: Sequence[SiteFile], path: Path | None) -> list[str]:
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


def _check_sites(sites: Sequence[SiteFile], path: Path | None) -> None:
    """Site names are unique; a site that owns no label and holds no data is refused by the topology."""
    names: dict[str, int] = {}
    for i, s in enumerate(sites):
        if s.name in names:
            raise config_error(path, f"sites[{i}].name", f"'{s.name}' is also the name of sites[{names[s.name]}]",
                               "give every site its own name")
        names[s.name] = i


def _default_preset(sites: Sequence[SiteFile]) -> str:
    """One site: vanilla; sites that hold the same data: horizontal; else vertical (different data, the same
    patients)."""
    if len(sites) == 1:
        return "vanilla"
    data = [{k: m.shape for k, m in s.modalities.items()} for s in sites]
    return "horizontal" if all(d == data[0] for d in data) else "vertical"


def _tasks(doc: ExperimentFile, preset: str, path: Path | None) -> tuple[TaskEntry, ...]:
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
    doc = validate(ExperimentFile, data, path)
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
                            labels=s.labels, defenses=tuple((d.name, d.strength) for d in s.defenses),
                            secret_env=s.secret_env, secret_file=_resolve(base, s.secret_file),
                            public_key=_resolve(base, s.public_key), device=s.device)
                  for s, party in zip(doc.sites, parties, strict=True))
    server = ServerConfig(host=doc.server.host, port=doc.server.port,
                          run_dir=base / (doc.server.run_dir or Path("runs") / doc.experiment),
                          device=doc.server.device)
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
