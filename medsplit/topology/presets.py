"""The paper's configurations as functions from a study (sites, tasks) to a topology, and their registry.

``PRESETS`` is the one place that says, for every preset, how many sites it takes, how its site parties
are named, which data each site of its synthetic cohort holds, and which knobs of ``PresetConfig`` it reads;
the experiment loader, the synthetic cohorts, the CLI and the dashboard all derive from it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..suggest import did_you_mean
from .model import Party, Segment, Topology
from .parts import (
    KNOBS,
    PresetConfig,
    body_after,
    heads_on,
    one_site,
    owner_of,
    parties_of,
    site_cut,
    task_head,
    tasks_of,
    with_inputs,
)
from .segments import conv_block, mlp
from .study import SiteSpec, StudySpec, TaskSpec

__all__ = ["PresetConfig", "PresetSpec", "PRESETS", "build_preset", "preset_spec", "default_study", "KNOBS",
           "DATA_RANKS", "MERGE_KNOB"]

#: the values of the ``merge`` knob: how the vertical server merges the sites' cuts
MERGE_KNOB = ("concat", "sum", "mean")

#: the per-sample shape of each data key of the presets' cohorts (``default_study``): (allowed lengths, written as)
DATA_RANKS: dict[str, tuple[tuple[int, ...], str]] = {"image": ((3, 4), "[C, H, W] or [C, D, H, W]"),
                                                      "ehr": ((1,), "[F]")}

# --- the presets ---------------------------------------------------------------------------------------


def vanilla(study: StudySpec, cfg: PresetConfig) -> Topology:
    """site encoder -> server; the site sends its labels to the server."""
    site = one_site(study, "vanilla")
    cut = site_cut(site, cfg, "encoder", feature_map=True)
    server, heads = heads_on("server", cut.name, study, cfg, body_after(cut, cfg.cut_features, cfg), cfg.cut_features,
                              "head")
    return Topology("vanilla", parties_of(study) + [Party("server", "server")], cut.segments + server,
                    tasks_of(study, heads, shared=True))


def ushaped(study: StudySpec, cfg: PresetConfig) -> Topology:
    """site head -> server body -> site tail: the loss is computed at the site; labels never leave it."""
    site = one_site(study, "ushaped")
    cut = site_cut(site, cfg, "head", feature_map=True)
    body = Segment("server.body", "server", body_after(cut, cfg.cut_features, cfg), (cut.name,))
    tails, heads = heads_on(site.party, "server.body", study, cfg, None, cfg.hidden, "tail")
    return Topology("ushaped", parties_of(study) + [Party("server", "server")], cut.segments + [body] + tails,
                    tasks_of(study, heads, shared=False))


def vertical(study: StudySpec, cfg: PresetConfig) -> Topology:
    """Sites hold different data of the same patients; the server merges their cuts.

    With ``ushaped`` the server sends its output back to the site that owns each task's labels, whose tail
    computes the loss there.
    """
    if cfg.merge not in MERGE_KNOB:
        raise ConfigError(f"vertical merge must be concat, sum or mean, not '{cfg.merge}'")
    if len(study.sites) < 2:
        raise ConfigError(f"preset 'vertical' needs at least 2 sites, got {len(study.sites)}",
                          hint="list each institution that holds some of the patients' data")
    cuts = [site_cut(s, cfg, "encoder", feature_map=False) for s in study.sites]
    merged = cfg.cut_features * len(cuts) if cfg.merge == "concat" else cfg.cut_features
    inputs = tuple(c.name for c in cuts)
    segments = [seg for c in cuts for seg in c.segments]
    parties = parties_of(study) + [Party("server", "server")]
    if not cfg.ushaped:
        body = mlp(merged, (), cfg.hidden, final_activation=True)
        server, heads = heads_on("server", "", study, cfg, body, merged, "head")
        server[0] = with_inputs(server[0], inputs, cfg.merge)
        return Topology("vertical", parties, segments + server, tasks_of(study, heads, shared=True))
    trunk = Segment("server.trunk", "server", mlp(merged, (), cfg.hidden, final_activation=True), inputs,
                    merge=cfg.merge)  # type: ignore[arg-type]
    tails, heads = [], {}
    for task in study.tasks:
        owner = owner_of(study, task)
        name = f"{owner}.tail" if len(study.tasks) == 1 else f"{owner}.{task.name}_tail"
        tails.append(Segment(name, owner, task_head(task, cfg.hidden), ("server.trunk",)))
        heads[task.name] = name
    return Topology("vertical", parties, segments + [trunk] + tails, tasks_of(study, heads, shared=False))


def _servers(cfg: PresetConfig) -> list[str]:
    return [f"server_{i + 1}" for i in range(cfg.servers)] if cfg.servers > 1 else ["server"]


def multitask(study: StudySpec, cfg: PresetConfig) -> Topology:
    """One site's encoder feeds a head per task, on ``servers`` servers (round robin)."""
    site = one_site(study, "multitask")
    cut = site_cut(site, cfg, "encoder", feature_map=False)
    servers = _servers(cfg)
    segments, heads = list(cut.segments), {}
    for i, task in enumerate(study.tasks):
        server = servers[i % len(servers)]
        heads[task.name] = f"{server}.{task.name}_head"
        segments.append(Segment(heads[task.name], server, nn.Sequential(
            mlp(cfg.cut_features, (), cfg.hidden, final_activation=True), task_head(task, cfg.hidden)), (cut.name,)))
    used = [s for s in servers if any(seg.party == s for seg in segments)]
    return Topology("multitask", parties_of(study) + [Party(s, "server") for s in used], segments,
                    tasks_of(study, heads, shared=True))


def multihop(study: StudySpec, cfg: PresetConfig) -> Topology:
    """site -> relay_1 -> ... -> server, each party holding one segment; labels go from the site to the server."""
    site = one_site(study, "multihop")
    cut = site_cut(site, cfg, "encoder", feature_map=True)
    relays = [f"relay_{i + 1}" for i in range(cfg.hops)]
    segments, prev = list(cut.segments), cut.name
    for r in relays:
        layer = conv_block(cut.dims, cut.channels, cut.channels, stride=1) if cut.feature_map else \
            mlp(cfg.cut_features, (), cfg.cut_features, final_activation=True)
        segments.append(Segment(f"{r}.conv" if cut.feature_map else f"{r}.layer", r, layer, (prev,)))
        prev = segments[-1].name
    server, heads = heads_on("server", prev, study, cfg, body_after(cut, cfg.cut_features, cfg), cfg.cut_features,
                              "head")
    return Topology("multihop", parties_of(study) + [Party(r, "hop") for r in relays] + [Party("server", "server")],
                    segments + server, tasks_of(study, heads, shared=True))


def _many_sites(study: StudySpec, cfg: PresetConfig, name: str, schedule: str) -> Topology:
    if len(study.sites) < 2:
        raise ConfigError(f"preset '{name}' needs at least 2 sites, got {len(study.sites)}",
                          hint="list two or more hospitals; with one, use vanilla or ushaped")
    first = study.sites[0]
    for other in study.sites[1:]:
        if dict(other.data) != dict(first.data) or dict(other.encoders) != dict(first.encoders):
            raise ConfigError(
                f"preset '{name}' trains one client model for every site, so every site must hold the same data "
                f"with the same encoders: '{other.party}' holds {dict(other.data)}, '{first.party}' holds "
                f"{dict(first.data)}", hint="give every site the same columns and image sizes (the same data "
                                            "keys and shapes), or use vertical for sites that hold different data")
    # One client model, copied: replicas start from the same weights (averaging unrelated networks is noise).
    client = site_cut(first, cfg, "encoder", feature_map=True)
    segments, cut_names = [], []
    for site in study.sites:
        for seg in client.segments:
            renamed = seg.name.replace(f"{first.party}.", f"{site.party}.", 1)
            inputs = tuple(i.replace(f"{first.party}.", f"{site.party}.", 1) for i in seg.inputs)
            segments.append(Segment(renamed, site.party, copy.deepcopy(seg.module), inputs, merge=seg.merge,
                                    defenses=seg.defenses))
        cut_names.append(client.name.replace(f"{first.party}.", f"{site.party}.", 1))
    server, heads = heads_on("server", "", study, cfg, body_after(client, cfg.cut_features, cfg), cfg.cut_features,
                              "head")
    server[0] = with_inputs(server[0], tuple(cut_names), "route")
    groups = [tuple(s.name.replace(f"{first.party}.", f"{site.party}.", 1) for site in study.sites)
              for s in client.segments]
    return Topology(name, parties_of(study) + [Party("server", "server")], segments + server,
                    tasks_of(study, heads, shared=True), schedule=schedule, replicas=groups,  # type: ignore[arg-type]
                    aggregator="server" if schedule == "parallel" else None)


def horizontal(study: StudySpec, cfg: PresetConfig) -> Topology:
    """Sites with the same data and different patients train one client segment in turn (Gupta & Raskar)."""
    return _many_sites(study, cfg, "horizontal", "turns")


def splitfed(study: StudySpec, cfg: PresetConfig) -> Topology:
    """Sites train copies of the client segment in parallel; the copies are averaged each round (Thapa et al.)."""
    return _many_sites(study, cfg, "splitfed", "parallel")


# --- the registry ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresetSpec:
    """What a preset is: its builder, and what a study needs to run it.

    ``siteparties_of(n)`` names the site parties for ``n`` sites; ``site_data(n)`` says what each holds in the
    preset's synthetic cohort, as {party: (data keys, label keys)}; ``layout`` is how that cohort is laid out
    ("vertical": different data of the same patients; "horizontal": the same data of different patients);
    ``knobs`` are the ``PresetConfig`` fields it reads.
    """

    name: str
    build: Callable[[StudySpec, PresetConfig], Topology]
    summary: str
    site_parties: Callable[[int], list[str]]
    site_data: Callable[[int], dict[str, tuple[tuple[str, ...], tuple[str, ...]]]]
    layout: str
    min_sites: int = 1
    max_sites: int | None = 1
    knobs: tuple[str, ...] = ("nopeek", "cut_features", "hidden", "channels")

    def cohort_sites(self, requested: int) -> int:
        """Sites of the preset's synthetic cohort: ``requested`` for horizontal and SplitFed (any number of
        hospitals), the preset's own number for the others."""
        return requested if self.layout == "horizontal" and self.max_sites is None else self.min_sites

    def takes(self, n: int) -> bool:
        """Whether the preset runs with ``n`` sites."""
        return n >= self.min_sites and (self.max_sites is None or n <= self.max_sites)

    @property
    def sites_wanted(self) -> str:
        """How many sites it takes, in words: 'exactly 1 site', 'exactly 2 sites', 'at least 2 sites'."""
        n = self.min_sites
        return f"{'exactly' if self.max_sites == n else 'at least'} {n} site{'s' if n > 1 else ''}"

    def check_sites(self, n: int) -> None:
        if not self.takes(n):
            raise ConfigError(f"preset '{self.name}' needs {self.sites_wanted}, got {n}",
                              hint="use horizontal or splitfed for several sites with the same data"
                              if self.max_sites == 1 else f"list {self.sites_wanted} in the experiment")


def _hospitals(n: int) -> list[str]:
    return [f"hospital_{i + 1}" for i in range(n)]


def _vertical_parties(n: int) -> list[str]:
    return ["imaging", "ehr"] + [f"site_{i + 3}" for i in range(n - 2)]


def _one(party: str, data: tuple[str, ...], labels: tuple[str, ...]) -> Callable[[int], dict[str, Any]]:
    return lambda n: {party: (data, labels)}


PRESETS: dict[str, PresetSpec] = {spec.name: spec for spec in (
    PresetSpec("vanilla", vanilla, "site encoder -> server; the site sends its labels to the server",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis",)), "horizontal"),
    PresetSpec("ushaped", ushaped, "site head -> server body -> site tail; labels never leave the site",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis",)), "horizontal"),
    PresetSpec("vertical", vertical, "sites hold different data of the same patients; the server merges their cuts",
               _vertical_parties,
               lambda n: {"imaging": (("image",), ()), "ehr": (("ehr",), ("diagnosis",)),
                          **{p: (("image",), ()) for p in _vertical_parties(n)[2:]}}, "vertical",
               min_sites=2, max_sites=None, knobs=("ushaped", "merge", "nopeek", "cut_features", "hidden", "channels")),
    PresetSpec("multitask", multitask, "one site's encoder feeds a head per task, on one server or several",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis", "mortality")), "horizontal",
               knobs=("servers", "nopeek", "cut_features", "hidden", "channels")),
    PresetSpec("multihop", multihop, "site -> relay -> ... -> server, one segment each",
               lambda n: ["hospital"], _one("hospital", ("image",), ("diagnosis",)), "horizontal",
               knobs=("hops", "nopeek", "cut_features", "hidden", "channels")),
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


def default_study(name: str, cfg: PresetConfig) -> StudySpec:
    """The study of a preset's synthetic cohort: its sites' data (images of ``image_shape``, EHR tables of
    ``ehr_features``) and labels, and a binary task per label (``cfg.tasks`` for multitask)."""
    spec = preset_spec(name)
    n = spec.cohort_sites(cfg.sites)
    spec.check_sites(n)
    shapes = {"image": tuple(cfg.image_shape), "ehr": (cfg.ehr_features,)}
    layout = spec.site_data(n)
    sites = tuple(SiteSpec(party, {k: shapes[k] for k in keys}, tuple(cfg.tasks) if name == "multitask" else labels)
                  for party, (keys, labels) in layout.items())
    labels: Sequence[str] = cfg.tasks if name == "multitask" else ("diagnosis",)
    return StudySpec(sites, tuple(TaskSpec(label, label) for label in labels))


def build_preset(name: str, cfg: PresetConfig | None = None, study: StudySpec | None = None) -> Topology:
    """The topology of preset ``name`` for ``study`` (the preset's synthetic cohort when None), with ``cfg``'s knobs."""
    cfg = cfg or PresetConfig()
    spec = preset_spec(name)
    study = study or default_study(name, cfg)
    spec.check_sites(len(study.sites))
    return spec.build(study, cfg)
