"""The pieces presets are built from: a site's part up to its cut, what continues a cut, task heads.

Each site's part is built from its own data: a table gets an MLP, an image a CNN (or the encoder the study
chose), several modalities at one site are encoded apart and fused into one cut. A site that holds a single
image with the default encoder keeps the paper's feature-map cut where the preset allows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError
from .defenses import CutDefense, NoPeek
from .encoders import EncoderSpec, build_encoder, modality_kind
from .model import Party, Segment, Task
from .segments import cnn_body, cnn_encoder, head, mlp
from .study import SiteSpec, StudySpec, TaskSpec

__all__ = ["PresetConfig", "KNOBS", "Cut", "site_cut", "body_after", "task_head", "heads_on", "tasks_of",
           "parties_of", "one_site", "with_inputs", "owner_of"]

#: the knobs of PresetConfig an experiment's ``topology:`` section may set
KNOBS = ("ushaped", "merge", "nopeek", "hops", "servers", "cut_features", "hidden", "channels")


@dataclass
class PresetConfig:
    """Knobs shared by the presets. ``image_shape`` is (C, H, W) or (C, D, H, W); ``ehr_features`` F (both only
    shape the default study, when none is given)."""

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


# --- a site's part -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    """What a site's part ends in: its segments, the one whose output is the cut, and whether it is a feature
    map (C, H, W[, D]) with ``channels`` and ``dims``, or a vector."""

    segments: list[Segment]
    name: str
    feature_map: bool = False
    channels: int = 0
    dims: int = 2


def defenses_of(cfg: PresetConfig) -> tuple[CutDefense, ...]:
    return (NoPeek(cfg.nopeek),) if cfg.nopeek > 0 else ()


def single_image(site: SiteSpec) -> str | None:
    """The data key of a site that holds one image and keeps the default encoder, else None."""
    if len(site.data) != 1:
        return None
    key, shape = next(iter(site.data.items()))
    return key if modality_kind(shape) == "image" and key not in site.encoders else None


def site_cut(site: SiteSpec, cfg: PresetConfig, name: str, *, feature_map: bool) -> Cut:
    """The segments of a site's part, up to and including the cut (segment ``{party}.{name}``)."""
    cut = f"{site.party}.{name}"
    key = single_image(site)
    if feature_map and key is not None:  # the paper's image cut: strided convolutions, no pooling
        shape = site.data[key]
        module = cnn_encoder(shape[0], cfg.channels, len(shape) - 1)
        return Cut([Segment(cut, site.party, module, (f"data:{key}",), defenses=defenses_of(cfg))], cut,
                    feature_map=True, channels=cfg.channels[-1], dims=len(shape) - 1)
    encoders = {k: build_encoder(with_channels(site.encoder(k), cfg), shape, cfg.cut_features,
                                 where=f"site '{site.party}' data '{k}'") for k, shape in site.data.items()}
    if len(encoders) == 1:
        (k, only), = encoders.items()
        return Cut([Segment(cut, site.party, only, (f"data:{k}",), defenses=defenses_of(cfg))], cut)
    # Several modalities at one site: each its own encoder, fused by a layer at the site into one cut.
    parts = [Segment(f"{site.party}.{k}_encoder", site.party, m, (f"data:{k}",)) for k, m in encoders.items()]
    fuse = mlp(cfg.cut_features * len(parts), (), cfg.cut_features, final_activation=True)
    return Cut(parts + [Segment(cut, site.party, fuse, tuple(p.name for p in parts), defenses=defenses_of(cfg))], cut)


def with_channels(spec: EncoderSpec, cfg: PresetConfig) -> EncoderSpec:
    """The preset's ``channels`` knob reaches a CNN that the study did not size itself."""
    if spec.kind == "cnn" and "channels" not in spec.options:
        return EncoderSpec("cnn", {**spec.options, "channels": list(cfg.channels)})
    return spec


def body_after(cut: Cut, width: int, cfg: PresetConfig) -> nn.Module:
    """What continues a cut at the next party: convolutions and pooling for a feature map, a layer for a vector."""
    if cut.feature_map:
        return cnn_body(cut.channels, (32,), cut.dims, cfg.hidden)
    return mlp(width, (), cfg.hidden, final_activation=True)


def task_head(task: TaskSpec, width: int) -> nn.Module:
    hidden = tuple(task.head.options.get("hidden", ())) if task.head is not None else ()
    return head(width, task.out_features, hidden)


def tasks_of(study: StudySpec, heads: dict[str, str], shared: bool) -> list[Task]:
    return [Task(t.name, heads[t.name], t.label, loss=t.loss, share_labels=shared) for t in study.tasks]  # type: ignore[arg-type]


def parties_of(study: StudySpec) -> list[Party]:
    return [Party(s.party, "site", data=dict(s.data), labels=s.labels) for s in study.sites]


def heads_on(party: str, after: str, study: StudySpec, cfg: PresetConfig, body: nn.Module | None,
              width: int, base: str) -> tuple[list[Segment], dict[str, str]]:
    """Task heads on ``party`` after segment ``after``: one segment ``{party}.{base}`` holding the body and the
    head when there is one task; else ``{party}.body`` (if any) and a ``{party}.{task}_{base}`` per task."""
    if len(study.tasks) == 1:
        task = study.tasks[0]
        module = task_head(task, cfg.hidden if body is not None else width)
        name = f"{party}.{base}"
        return [Segment(name, party, nn.Sequential(body, module) if body is not None else module, (after,))], \
            {task.name: name}
    segments, src, w = [], after, width
    if body is not None:
        segments.append(Segment(f"{party}.body", party, body, (after,)))
        src, w = f"{party}.body", cfg.hidden
    heads = {t.name: f"{party}.{t.name}_{base}" for t in study.tasks}
    segments += [Segment(heads[t.name], party, task_head(t, w), (src,)) for t in study.tasks]
    return segments, heads


def one_site(study: StudySpec, preset: str) -> SiteSpec:
    if len(study.sites) != 1:
        raise ConfigError(f"preset '{preset}' has one site, but the study lists {len(study.sites)}",
                          hint="use vertical for sites that hold different data of the same patients, or "
                               "horizontal/splitfed for sites that hold the same data of different patients")
    return study.sites[0]


def with_inputs(seg: Segment, inputs: tuple[str, ...], merge: str) -> Segment:
    return Segment(seg.name, seg.party, seg.module, inputs, merge=merge)  # type: ignore[arg-type]


def owner_of(study: StudySpec, task: TaskSpec) -> str:
    owners = study.owners(task.label)
    if len(owners) != 1:
        raise ConfigError(f"task '{task.name}': label '{task.label}' is owned by {owners or 'no site'}; in a "
                          "vertical study exactly one site owns each label",
                          hint="list the label under the labels of the one site that holds it")
    return owners[0]
