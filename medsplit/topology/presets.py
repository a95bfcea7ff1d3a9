"""The paper's configurations as functions that build topologies, and the registry that says what each needs.

``PRESETS`` is the one place that says, for every preset, which site parties it has, which data each site
holds (what a synthetic cohort must look like), which knobs of ``PresetConfig`` it reads and how many sites
it takes. The experiment loader, the synthetic cohorts, the CLI and the dashboard all derive from it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ConfigError
from ..suggest import did_you_mean
from .defenses import CutDefense, NoPeek
from .model import Party, Segment, Task, Topology
from .segments import cnn_body, cnn_encoder, conv_block, head, mlp, mlp_encoder

__all__ = ["PresetConfig", "PresetSpec", "PRESETS", "build_preset", "preset_spec", "KNOBS"]

#: the knobs of PresetConfig an experiment's ``topology:`` section may set
KNOBS = ("ushaped", "merge", "nopeek", "hops", "servers", "cut_features", "hidden", "channels")


@dataclass
class PresetConfig:
    """Knobs shared by the presets. ``image_shape`` is (C, H, W) or (C, D, H, W); ``ehr_features`` F."""

    sites: int = 3
    image_shape: tuple[int, ...] = (1, 32, 32)
    ehr_features: int = 12
    channels: tuple[int, ...] = (8, 16)
    cut_features: int = 32
    hidden: int = 32
    merge: str = "concat"
    ushaped: bool = False
    nopeek: float = 0.0
    hops: int = 1
    servers: int = 2
    tasks: tuple[str, ...] = field(default=("diagnosis", "mortality"))

    @property
    def spatial_dims(self) -> int:
        return len(self.image_shape) - 1


def _defenses(cfg: PresetConfig) -> tuple[CutDefense, ...]:
    return (NoPeek(cfg.nopeek),) if cfg.nopeek > 0 else ()


def _image_site(name: str, cfg: PresetConfig, labels: tuple[str, ...] = ("diagnosis",)) -> Party:
    return Party(name, "site", data={"image": tuple(cfg.image_shape)}, labels=labels)


def _image_encoder(cfg: PresetConfig, out_features: int | None = None) -> torch.nn.Sequential:
    return cnn_encoder(cfg.image_shape[0], cfg.channels, cfg.spatial_dims, out_features)


def _feature_map_head(cfg: PresetConfig) -> torch.nn.Sequential:
    """The server side of a feature-map cut: a convolution, pooling and a one-logit head."""
    return torch.nn.Sequential(cnn_body(cfg.channels[-1], (32,), cfg.spatial_dims, cfg.hidden), head(cfg.hidden))


def vanilla(cfg: PresetConfig) -> Topology:
    """site encoder -> server; the site sends its labels to the server."""
    return Topology("vanilla", [_image_site("hospital", cfg), Party("server", "server")], [
        Segment("hospital.encoder", "hospital", _image_encoder(cfg), ("data:image",), defenses=_defenses(cfg)),
        Segment("server.head", "server", _feature_map_head(cfg), ("hospital.encoder",)),
    ], [Task("diagnosis", "server.head", "diagnosis", share_labels=True)])


def ushaped(cfg: PresetConfig) -> Topology:
    """site head -> server body -> site tail: the loss is computed at the site; labels never leave it."""
    return Topology("ushaped", [_image_site("hospital", cfg), Party("server", "server")], [
        Segment("hospital.head", "hospital", _image_encoder(cfg), ("data:image",), defenses=_defenses(cfg)),
        Segment("server.body", "server", cnn_body(cfg.channels[-1], (32,), cfg.spatial_dims, cfg.hidden),
                ("hospital.head",)),
        Segment("hospital.tail", "hospital", head(cfg.hidden), ("server.body",)),
    ], [Task("diagnosis", "hospital.tail", "diagnosis")])


def vertical(cfg: PresetConfig) -> Topology:
    """CT at one site, EHR (and the labels) at another; the server merges their cuts.

    With ``ushaped`` the server sends its output back to the labels' site, whose tail computes the loss.
    """
    if cfg.merge not in ("concat", "sum", "mean"):
        raise ConfigError(f"vertical merge must be concat, sum or mean, not '{cfg.merge}'")
    ehr_cut = cfg.cut_features if cfg.merge != "concat" else cfg.cut_features // 2
    merged = cfg.cut_features + ehr_cut if cfg.merge == "concat" else cfg.cut_features
    parties = [_image_site("imaging", cfg, labels=()),
               Party("ehr", "site", data={"ehr": (cfg.ehr_features,)}, labels=("diagnosis",)),
               Party("server", "server")]
    segments = [
        Segment("imaging.encoder", "imaging", _image_encoder(cfg, cfg.cut_features), ("data:image",),
                defenses=_defenses(cfg)),
        Segment("ehr.encoder", "ehr", mlp_encoder(cfg.ehr_features, (64,), ehr_cut), ("data:ehr",),
                defenses=_defenses(cfg)),
    ]
    if cfg.ushaped:
        segments += [Segment("server.trunk", "server", mlp(merged, (), cfg.hidden, final_activation=True),
                             ("imaging.encoder", "ehr.encoder"), merge=cfg.merge),
                     Segment("ehr.tail", "ehr", head(cfg.hidden), ("server.trunk",))]
        tasks = [Task("diagnosis", "ehr.tail", "diagnosis")]
    else:
        segments += [Segment("server.head", "server", mlp(merged, (cfg.hidden,), 1),
                             ("imaging.encoder", "ehr.encoder"), merge=cfg.merge)]
        tasks = [Task("diagnosis", "server.head", "diagnosis", share_labels=True)]
    return Topology("vertical", parties, segments, tasks)


def _servers(cfg: PresetConfig) -> list[str]:
    return [f"server_{i + 1}" for i in range(cfg.servers)] if cfg.servers > 1 else ["server"]


def multitask(cfg: PresetConfig) -> Topology:
    """One site's encoder feeds a head per task (diagnosis, mortality), on ``servers`` servers (1 or more)."""
    servers = _servers(cfg)
    parties = [_image_site("hospital", cfg, labels=tuple(cfg.tasks))] + [Party(s, "server") for s in servers]
    segments = [Segment("hospital.encoder", "hospital", _image_encoder(cfg, cfg.cut_features), ("data:image",),
                        defenses=_defenses(cfg))]
    tasks = []
    for i, task in enumerate(cfg.tasks):
        server = servers[i % len(servers)]
        segments.append(Segment(f"{server}.{task}_head", server, mlp(cfg.cut_features, (cfg.hidden,), 1),
                                ("hospital.encoder",)))
        tasks.append(Task(task, f"{server}.{task}_head", task, share_labels=True))
    return Topology("multitask", parties, segments, tasks)


def _relays(cfg: PresetConfig) -> list[str]:
    return [f"relay_{i + 1}" for i in range(cfg.hops)]


def multihop(cfg: PresetConfig) -> Topology:
    """site -> relay_1 -> ... -> server, each party holding one segment; labels go from the site to the server."""
    hops = _relays(cfg)
    c = cfg.channels[-1]
    parties = [_image_site("hospital", cfg)] + [Party(h, "hop") for h in hops] + [Party("server", "server")]
    segments = [Segment("hospital.encoder", "hospital", _image_encoder(cfg), ("data:image",),
                        defenses=_defenses(cfg))]
    prev = "hospital.encoder"
    for h in hops:
        segments.append(Segment(f"{h}.conv", h, conv_block(cfg.spatial_dims, c, c, stride=1), (prev,)))
        prev = f"{h}.conv"
    segments.append(Segment("server.head", "server", _feature_map_head(cfg), (prev,)))
    return Topology("multihop", parties, segments, [Task("diagnosis", "server.head", "diagnosis", share_labels=True)])


def _hospitals(n: int) -> list[str]:
    return [f"hospital_{i + 1}" for i in range(n)]


def _many_sites(cfg: PresetConfig, name: str, schedule: str) -> Topology:
    if cfg.sites < 2:
        raise ConfigError(f"preset '{name}' needs at least 2 sites, got {cfg.sites}")
    sites = _hospitals(cfg.sites)
    # One client model, copied: replicas start from the same weights (averaging unrelated networks is noise).
    client = _image_encoder(cfg)
    encoders = [Segment(f"{s}.encoder", s, copy.deepcopy(client), ("data:image",), defenses=_defenses(cfg))
                for s in sites]
    server = Segment("server.head", "server", _feature_map_head(cfg), tuple(e.name for e in encoders),
                     merge="route")
    return Topology(name, [_image_site(s, cfg) for s in sites] + [Party("server", "server")],
                    encoders + [server], [Task("diagnosis", "server.head", "diagnosis", share_labels=True)],
                    schedule=schedule, replicas=[tuple(e.name for e in encoders)],
                    aggregator="server" if schedule == "parallel" else None)


def horizontal(cfg: PresetConfig) -> Topology:
    """Sites with the same modality and different patients train one client segment in turn (Gupta & Raskar)."""
    return _many_sites(cfg, "horizontal", "turns")


def splitfed(cfg: PresetConfig) -> Topology:
    """Sites train copies of the client segment in parallel; the copies are averaged each round (Thapa et al.)."""
    return _many_sites(cfg, "splitfed", "parallel")


@dataclass(frozen=True)
class PresetSpec:
    """What a preset is: its builder, and what a study needs to run it.

    ``site_parties(n)`` names the site parties for ``n`` sites; ``site_data(n)`` says what each holds, as
    {party: (data keys, label keys)}; ``layout`` is how a synthetic cohort for it is laid out ("vertical":
    different data of the same patients; "horizontal": the same data of different patients); ``knobs`` are
    the ``PresetConfig`` fields it reads.
    """

    name: str
    build: Callable[[PresetConfig], Topology]
    summary: str
    site_parties: Callable[[int], list[str]]
    site_data: Callable[[int], dict[str, tuple[tuple[str, ...], tuple[str, ...]]]]
    layout: str
    min_sites: int = 1
    max_sites: int | None = 1
    knobs: tuple[str, ...] = ("nopeek", "channels", "hidden")

    def check_sites(self, n: int) -> None:
        if n < self.min_sites or (self.max_sites is not None and n > self.max_sites):
            if self.max_sites == self.min_sites:
                want = f"exactly {self.min_sites} site{'s' if self.min_sites > 1 else ''}"
            else:
                want = f"at least {self.min_sites} sites"
            raise ConfigError(f"preset '{self.name}' needs {want}, got {n}",
                              hint="use horizontal or splitfed for several sites with the same data"
                              if self.max_sites == 1 else f"list {want} in the experiment")


def _one(party: str, data: tuple[str, ...], labels: tuple[str, ...]) -> Callable[[int], dict]:
    return lambda n: {party: (data, labels)}


PRESETS: dict[str, PresetSpec] = {spec.name: spec for spec in (
    PresetSpec("vanilla", vanilla, "site encoder -> server; the site sends its labels to the server",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis",)), "horizontal"),
    PresetSpec("ushaped", ushaped, "site head -> server body -> site tail; labels never leave the site",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis",)), "horizontal"),
    PresetSpec("vertical", vertical, "CT at one site, EHR and labels at another; the server merges their cuts",
               lambda n: ["imaging", "ehr"],
               lambda n: {"imaging": (("image",), ()), "ehr": (("ehr",), ("diagnosis",))}, "vertical",
               min_sites=2, max_sites=2, knobs=("ushaped", "merge", "nopeek", "cut_features", "hidden", "channels")),
    PresetSpec("multitask", multitask, "one site's encoder feeds a diagnosis head and a mortality head on servers",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis", "mortality")), "horizontal",
               knobs=("servers", "nopeek", "cut_features", "hidden", "channels")),
    PresetSpec("multihop", multihop, "site -> relay -> ... -> server, one segment each",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis",)), "horizontal",
               knobs=("hops", "nopeek", "hidden", "channels")),
    PresetSpec("horizontal", horizontal,
               "sites with different patients train one client segment in turn, handing weights on",
               _hospitals, lambda n: {p: (("image",), ("diagnosis",)) for p in _hospitals(n)}, "horizontal",
               min_sites=2, max_sites=None),
    PresetSpec("splitfed", splitfed, "sites train client copies in parallel; the copies are averaged every epoch",
               _hospitals, lambda n: {p: (("image",), ("diagnosis",)) for p in _hospitals(n)}, "horizontal",
               min_sites=2, max_sites=None),
)}


def preset_spec(name: str) -> PresetSpec:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'{did_you_mean(name, PRESETS)}",
                          hint=f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_preset(name: str, cfg: PresetConfig | None = None) -> Topology:
    """The topology of preset ``name`` with the knobs of ``cfg`` (its defaults when None)."""
    return preset_spec(name).build(cfg or PresetConfig())
