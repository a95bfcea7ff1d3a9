"""The experiment YAML: which sites take part, which topology, how to train, where the server listens.

`medsplit synth` writes one (sites, shapes, label owners); `medsplit server`, `medsplit run` and the
dashboard read it. Every key is validated into typed objects, with errors that name the file, the key
and the fix. Paths are relative to the experiment file.

    experiment: NAME
    seed: 0
    topology: {preset: vertical, ushaped: false, merge: concat, nopeek: 0.0, hops: 1, servers: 2}
    training: {epochs: 5, batch_size: 32, lr: 0.001, checkpoint_every: 20, timeout: 120, rejoin_timeout: 600}
    server: {host: 127.0.0.1, port: 29500, run_dir: runs/NAME}
    sites:
      - name: site_1
        config: site_1/site.yaml          # the site's own YAML (used by `medsplit run` on one machine)
        party: imaging                    # its place in the topology (default: by preset and modality)
        modalities: {image: {shape: [1, 32, 32]}}
        labels: []
        secret_env: MEDSPLIT_SECRET_SITE_1    # or secret_file: PATH, or public_key: PATH (Ed25519)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError
from ..topology.presets import PRESETS, PresetConfig, build_preset
from ..suggest import did_you_mean
from ..topology.model import Topology

__all__ = ["Experiment", "SiteEntry", "TrainingConfig", "ServerConfig", "TopologyConfig", "load_experiment",
           "parse_experiment", "dump_experiment"]

_TOP = ("experiment", "seed", "layout", "split", "labels", "sites", "alignment", "synth", "topology", "training",
        "server")
_SITE = ("name", "config", "party", "patients", "modalities", "labels", "secret_env", "secret_file", "public_key")
_TOPOLOGY = ("preset", "ushaped", "merge", "nopeek", "hops", "servers", "cut_features", "hidden", "channels")
_TRAINING = ("epochs", "batch_size", "lr", "checkpoint_every", "timeout", "rejoin_timeout")
_SERVER = ("host", "port", "run_dir")


@dataclass(frozen=True)
class SiteEntry:
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
                raise ConfigError(f"site '{self.name}': cannot read secret_file {self.secret_file}: {exc}") from exc
        return None


@dataclass(frozen=True)
class TopologyConfig:
    preset: str
    ushaped: bool = False
    merge: str = "concat"
    nopeek: float = 0.0
    hops: int = 1
    servers: int = 2
    cut_features: int = 32
    hidden: int = 32
    channels: tuple[int, ...] = (8, 16)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    checkpoint_every: int = 20
    timeout: float = 120.0
    rejoin_timeout: float = 600.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 29500
    run_dir: Path = Path("runs")


@dataclass(frozen=True)
class Experiment:
    name: str
    seed: int
    topology: TopologyConfig
    training: TrainingConfig
    server: ServerConfig
    sites: tuple[SiteEntry, ...]
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def site(self, name: str) -> SiteEntry:
        for s in self.sites:
            if s.name == name:
                return s
        raise ConfigError(f"experiment '{self.name}' has no site '{name}'{did_you_mean(name, [s.name for s in self.sites])}",
                          hint=f"its sites are: {', '.join(s.name for s in self.sites)}")

    def digest(self) -> str:
        """What every party must agree on before training together: topology, training and sites (not paths)."""
        t, tr = self.topology, self.training
        spec = {"name": self.name, "seed": self.seed, "topology": t.__dict__, "training": tr.__dict__,
                "sites": [(s.name, s.party, {k: list(v) for k, v in s.shapes.items()}, list(s.labels))
                          for s in self.sites]}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def alignment_context(self) -> bytes:
        """Names the study for patient alignment: the same in every run of it, in-process or as nodes."""
        return f"{self.name}|{self.seed}".encode()

    def preset_config(self) -> PresetConfig:
        """Shapes come from the sites' declared modalities; every party builds the same topology from them."""
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
        import torch

        torch.manual_seed(self.seed)
        topo = build_preset(self.topology.preset, self.preset_config())
        sites_in_topology = {p.name for p in topo.parties if p.data}
        mine = {s.party for s in self.sites}
        if mine != sites_in_topology:
            where = f" in {self.path}" if self.path else ""
            raise ConfigError(f"experiment '{self.name}'{where}: preset '{self.topology.preset}' has site parties "
                              f"{sorted(sites_in_topology)}, but the sites map to {sorted(mine)}",
                              hint="set each site's 'party:' to one of the preset's site parties, or list as many "
                                   "sites as the preset needs")
        return topo


# --- parsing ---------------------------------------------------------------------------------------




def _err(path: Path | None, key: str, message: str, hint: str | None = None) -> ConfigError:
    where = f"{path}: " if path else ""
    return ConfigError(f"{where}key '{key}': {message}", hint=hint)


def _check_keys(data: Mapping, allowed: tuple[str, ...], path: Path | None, where: str) -> None:
    if not isinstance(data, Mapping):
        raise _err(path, where, f"expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise _err(path, f"{where}.{key}" if where else str(key), f"unknown key{did_you_mean(str(key), list(allowed))}",
                       hint=f"allowed keys here: {', '.join(allowed)}")


def _typed(value: Any, kind: type, path: Path | None, key: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _err(path, key, f"expected {kind.__name__}, got {value!r}")
    return value


def _section(cls: type, data: Mapping | None, allowed: tuple[str, ...], path: Path | None, where: str, **extra):
    data = data or {}
    _check_keys(data, allowed, path, where)
    defaults = cls(**extra) if extra else cls()
    values = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        kind = type(default)
        if kind is tuple:
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                raise _err(path, f"{where}.{key}", f"expected a list of integers, got {value!r}")
            values[key] = tuple(value)
        elif kind is type(Path()) or isinstance(default, Path):
            values[key] = Path(_typed(value, str, path, f"{where}.{key}"))
        else:
            values[key] = _typed(value, kind, path, f"{where}.{key}")
    return replace(defaults, **values)


def _default_preset(data: Mapping) -> str:
    if data.get("layout") == "vertical":
        return "vertical"
    return "horizontal" if len(data.get("sites") or []) > 1 else "vanilla"


def _default_parties(preset: str, sites: list[Mapping]) -> list[str]:
    if preset == "vertical":
        return ["imaging" if "image" in (s.get("modalities") or {}) else "ehr" for s in sites]
    if preset in ("horizontal", "splitfed"):
        return [f"hospital_{i + 1}" for i in range(len(sites))]
    return ["hospital"] * len(sites)


def parse_experiment(data: Mapping[str, Any], path: Path | None = None) -> Experiment:
    """Validate a parsed experiment YAML."""
    _check_keys(data, _TOP, path, "")
    if "experiment" not in data:
        raise _err(path, "experiment", "missing", hint="name the experiment: 'experiment: my-study'")
    base = path.parent if path else Path.cwd()
    topo_data = dict(data.get("topology") or {})
    topo_data.setdefault("preset", _default_preset(data))
    if topo_data["preset"] not in PRESETS:
        raise _err(path, "topology.preset", f"unknown preset '{topo_data['preset']}'"
                   f"{did_you_mean(str(topo_data['preset']), list(PRESETS))}", hint=f"one of {', '.join(PRESETS)}")
    topology = _section(TopologyConfig, topo_data, _TOPOLOGY, path, "topology", preset=topo_data["preset"])
    training = _section(TrainingConfig, data.get("training"), _TRAINING, path, "training")
    if training.epochs < 1 or training.batch_size < 1 or training.lr <= 0 or training.checkpoint_every < 1:
        raise _err(path, "training", "epochs, batch_size and checkpoint_every must be >= 1 and lr > 0")
    server = _section(ServerConfig, data.get("server"), _SERVER, path, "server")
    run_dir = server.run_dir if "run_dir" in (data.get("server") or {}) else Path("runs") / str(data["experiment"])
    server = replace(server, run_dir=run_dir if run_dir.is_absolute() else base / run_dir)
    raw_sites = data.get("sites")
    if not isinstance(raw_sites, list) or not raw_sites:
        raise _err(path, "sites", "expected a non-empty list of sites", hint="list each site with its name")
    parties = _default_parties(topology.preset, raw_sites)
    sites = []
    for i, s in enumerate(raw_sites):
        where = f"sites[{i}]"
        _check_keys(s, _SITE, path, where)
        if "name" not in s:
            raise _err(path, f"{where}.name", "missing")
        shapes = {}
        for key, m in (s.get("modalities") or {}).items():
            if not isinstance(m, Mapping) or not isinstance(m.get("shape"), list):
                raise _err(path, f"{where}.modalities.{key}.shape", "missing or not a list",
                           hint="declare the per-sample shape the site's pipeline produces, e.g. shape: [1, 32, 32]")
            shapes[str(key)] = tuple(int(v) for v in m["shape"])
        entry = SiteEntry(
            name=str(s["name"]), party=str(s.get("party") or parties[i]),
            config=(base / s["config"]) if s.get("config") else None, shapes=shapes,
            labels=tuple(s.get("labels") or ()), secret_env=s.get("secret_env"),
            secret_file=(base / s["secret_file"]) if s.get("secret_file") else None,
            public_key=(base / s["public_key"]) if s.get("public_key") else None)
        sites.append(entry)
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise _err(path, "sites", f"site names must be unique, got {names}")
    if topology.preset not in ("horizontal", "splitfed", "vertical") and len(sites) != 1:
        raise _err(path, "sites", f"preset '{topology.preset}' takes one site, got {len(sites)}",
                   hint="use horizontal or splitfed for several sites with the same modality")
    return Experiment(str(data["experiment"]), int(data.get("seed", 0)), topology, training, server, tuple(sites),
                      path, data)


def load_experiment(path: str | os.PathLike) -> Experiment:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"experiment file {path} does not exist",
                          hint="write one with `medsplit synth --out DIR` or copy one from experiments/") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_experiment(data, path.resolve())


def dump_experiment(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write an experiment mapping (validated first), so that what the dashboard saves always loads."""
    parse_experiment(data, Path(path).resolve())
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False))
