"""The paper's configurations as functions that build topologies; none has its own training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .data import SiteData, TensorTable
from .defenses import NoPeek
from .errors import ConfigError
from .segments import _conv, cnn_body, cnn_encoder, head, mlp, mlp_encoder
from .synthetic import CohortSpec, make_cohort
from .topology import Party, Segment, Task, Topology

__all__ = ["PresetConfig", "PRESETS", "build_preset", "preset_data"]


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


def _defenses(cfg: PresetConfig) -> tuple:
    return (NoPeek(cfg.nopeek),) if cfg.nopeek > 0 else ()


def _image_site(name: str, cfg: PresetConfig, labels: tuple[str, ...] = ("diagnosis",)) -> Party:
    return Party(name, "site", data={"image": tuple(cfg.image_shape)}, labels=labels)


def vanilla(cfg: PresetConfig) -> Topology:
    """site encoder -> server; the site sends its labels to the server."""
    return Topology("vanilla", [_image_site("hospital", cfg), Party("server", "server")], [
        Segment("hospital.encoder", "hospital", cnn_encoder(cfg.image_shape[0], cfg.channels, cfg.spatial_dims),
                ("data:image",), defenses=_defenses(cfg)),
        Segment("server.head", "server", torch.nn.Sequential(
            cnn_body(cfg.channels[-1], (32,), cfg.spatial_dims, cfg.hidden), head(cfg.hidden)), ("hospital.encoder",)),
    ], [Task("diagnosis", "server.head", "diagnosis", share_labels=True)])


def ushaped(cfg: PresetConfig) -> Topology:
    """site head -> server body -> site tail: the loss is computed at the site; labels never leave it."""
    return Topology("ushaped", [_image_site("hospital", cfg), Party("server", "server")], [
        Segment("hospital.head", "hospital", cnn_encoder(cfg.image_shape[0], cfg.channels, cfg.spatial_dims),
                ("data:image",), defenses=_defenses(cfg)),
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
        Segment("imaging.encoder", "imaging",
                cnn_encoder(cfg.image_shape[0], cfg.channels, cfg.spatial_dims, cfg.cut_features),
                ("data:image",), defenses=_defenses(cfg)),
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


def multitask(cfg: PresetConfig) -> Topology:
    """One site's encoder feeds a head per task (diagnosis, mortality), on ``servers`` servers (1 or more)."""
    servers = [f"server_{i + 1}" for i in range(max(1, cfg.servers))] if cfg.servers > 1 else ["server"]
    parties = [_image_site("hospital", cfg, labels=tuple(cfg.tasks))] + [Party(s, "server") for s in servers]
    segments = [Segment("hospital.encoder", "hospital",
                        cnn_encoder(cfg.image_shape[0], cfg.channels, cfg.spatial_dims, cfg.cut_features),
                        ("data:image",), defenses=_defenses(cfg))]
    tasks = []
    for i, task in enumerate(cfg.tasks):
        server = servers[i % len(servers)]
        segments.append(Segment(f"{server}.{task}_head", server, mlp(cfg.cut_features, (cfg.hidden,), 1),
                                ("hospital.encoder",)))
        tasks.append(Task(task, f"{server}.{task}_head", task, share_labels=True))
    return Topology("multitask", parties, segments, tasks)


def multihop(cfg: PresetConfig) -> Topology:
    """site -> relay_1 -> ... -> server, each party holding one segment; labels go from the site to the server."""
    hops = [f"relay_{i + 1}" for i in range(max(1, cfg.hops))]
    c = cfg.channels[-1]
    parties = [_image_site("hospital", cfg)] + [Party(h, "hop") for h in hops] + [Party("server", "server")]
    segments = [Segment("hospital.encoder", "hospital", cnn_encoder(cfg.image_shape[0], cfg.channels,
                                                                    cfg.spatial_dims), ("data:image",),
                        defenses=_defenses(cfg))]
    prev = "hospital.encoder"
    for h in hops:
        segments.append(Segment(f"{h}.conv", h, _conv(cfg.spatial_dims, c, c, stride=1), (prev,)))
        prev = f"{h}.conv"
    segments.append(Segment("server.head", "server", torch.nn.Sequential(
        cnn_body(c, (32,), cfg.spatial_dims, cfg.hidden), head(cfg.hidden)), (prev,)))
    return Topology("multihop", parties, segments, [Task("diagnosis", "server.head", "diagnosis", share_labels=True)])


def _many_sites(cfg: PresetConfig, name: str, schedule: str) -> Topology:
    if cfg.sites < 2:
        raise ConfigError(f"preset '{name}' needs at least 2 sites, got {cfg.sites}")
    sites = [f"hospital_{i + 1}" for i in range(cfg.sites)]
    encoders = [Segment(f"{s}.encoder", s, cnn_encoder(cfg.image_shape[0], cfg.channels, cfg.spatial_dims),
                        ("data:image",), defenses=_defenses(cfg)) for s in sites]
    server = Segment("server.head", "server", torch.nn.Sequential(
        cnn_body(cfg.channels[-1], (32,), cfg.spatial_dims, cfg.hidden), head(cfg.hidden)),
        tuple(e.name for e in encoders), merge="route")
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


PRESETS: dict[str, Callable[[PresetConfig], Topology]] = {
    "vanilla": vanilla, "ushaped": ushaped, "vertical": vertical, "multitask": multitask,
    "multihop": multihop, "horizontal": horizontal, "splitfed": splitfed,
}


def build_preset(name: str, cfg: PresetConfig | None = None) -> Topology:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'", hint=f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[name](cfg or PresetConfig())


def preset_data(topology: Topology, cfg: PresetConfig, seed: int, patients: int = 480,
                val_fraction: float = 0.25) -> dict[str, SiteData]:
    """In-memory synthetic data for every site of a preset topology.

    Vertical sites see different columns of the same patients (same rows, same order); every other site
    gets its own patients, with its own scanner shift, noise and age mix (non-IID, as hospitals are).
    """
    size = cfg.image_shape[-1]
    n_val = max(2, int(patients * val_fraction))
    out: dict[str, SiteData] = {}
    shared = None
    for i, party in enumerate(p for p in topology.parties if p.data):
        if topology.name == "vertical":
            shared = shared or make_cohort(CohortSpec(patients + n_val, size, cfg.ehr_features), seed)
            cohort = shared
        else:
            spec = CohortSpec(patients + n_val, size, cfg.ehr_features, shift=0.3 * i, noise=0.4 + 0.1 * i,
                              age_mean=0.3 * (i - 1))
            cohort = make_cohort(spec, seed * 101 + i)
        # Each site normalises its own images (as MONAI's NormalizeIntensity would): the scanner offset is
        # removed, the noise level is not, so sites stay non-IID.
        img = cohort["image"]
        flat = img.reshape(img.shape[0], -1)
        cohort = {**cohort, "image": ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(img)}
        if len(cfg.image_shape) == 4:  # 3D: stack the slice into a small volume
            cohort["image"] = cohort["image"].unsqueeze(2).expand(-1, -1, cfg.image_shape[1], -1, -1).contiguous()
        keys = list(party.data) + list(party.labels)
        out[party.name] = SiteData(TensorTable({k: cohort[k][:patients] for k in keys}),
                                   TensorTable({k: cohort[k][patients:] for k in keys}))
    return out
