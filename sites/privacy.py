"""`medsplit privacy`: train a preset or an experiment on synthetic patients shaped like it, attack it, and
write the leakage report card (text, JSON, PNG figures) into the run directory."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from medsplit.config import load_experiment
from medsplit.data import SiteData
from medsplit.errors import ConfigError
from medsplit.plan import compile_topology
from medsplit.privacy import CardRun, PrivacyCard, attack, render_card
from medsplit.privacy.figures import reconstruction_figure, roc_figure, safe_name
from medsplit.synthetic import preset_data, study_data
from medsplit.topology import (
    LABEL_DEFENSES,
    Clip,
    CutDefense,
    GaussianNoise,
    NoPeek,
    PresetConfig,
    build_preset,
    defend,
    make_defense,
)
from medsplit.topology.defenses import NOPEEK_SCALES, tail_segments
from medsplit.topology.model import Topology

from .demo import write_json
from .run import train_and_report

__all__ = ["PrivacyOptions", "run_privacy", "CARD_DIR"]

CARD_DIR = "privacy"  # RUN_DIR/privacy/: card.json, card.txt and the figures, where the dashboard finds them


@dataclass
class PrivacyOptions:
    preset: str = "ushaped"
    experiment: str | None = None
    epochs: int = 5
    seed: int = 0
    nopeek: float = 0.0
    nopeek_scale: str = "relative"
    noise: float = 0.0
    clip: float = 0.0
    label_defense: str | None = None
    label_strength: float | None = None
    ushaped: bool = False
    merge: str = "concat"
    sites: int = 3
    patients: int = 480
    aux_patients: int = 480
    batch_size: int = 32
    lr: float = 1e-3
    decoder_steps: int = 400
    run_dir: str | None = None
    progress: bool = True


def _check(opts: PrivacyOptions) -> None:
    def at_least(flag: str, value: float, low: float, hint: str, strict: bool = False) -> None:
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise ConfigError(f"{flag} must be {'>' if strict else '>='} {low:g}, got {value:g}", hint=hint)

    at_least("--epochs", opts.epochs, 1, "train at least one epoch")
    at_least("--nopeek", opts.nopeek, 0, "use 0 to turn NoPeek off")
    at_least("--noise", opts.noise, 0, "use 0 for no noise; 0.5 adds noise half the size of the cut's RMS")
    at_least("--clip", opts.clip, 0, "use 0 for no clipping, or the largest L2 norm of a patient's cut")
    at_least("--patients", opts.patients, 16, "give at least 16 training patients per site")
    at_least("--aux-patients", opts.aux_patients, 16, "the attacker's decoder needs at least 16 patients")
    at_least("--decoder-steps", opts.decoder_steps, 1, "give the attacker's decoder at least one step")
    if opts.nopeek_scale not in NOPEEK_SCALES:
        raise ConfigError(f"--nopeek-scale must be one of {', '.join(NOPEEK_SCALES)}", hint="relative is the default")
    if opts.label_defense is not None and opts.label_defense not in LABEL_DEFENSES:
        raise ConfigError(f"--label-defense must be one of {', '.join(LABEL_DEFENSES)}, got '{opts.label_defense}'",
                          hint="marvell (optimised noise, --label-strength S) or max_norm")
    if opts.label_strength is not None and opts.label_defense != "marvell":
        raise ConfigError("--label-strength sets Marvell's noise power", hint="add --label-defense marvell")


def _topology(opts: PrivacyOptions) -> tuple[Topology, PresetConfig | None, str]:
    """The preset's topology and its config, or the experiment's topology (its study has its own shapes)."""
    torch.manual_seed(opts.seed)
    if opts.experiment:
        exp = load_experiment(opts.experiment)
        return exp.build_topology(), None, exp.name
    cfg = PresetConfig(sites=opts.sites, ushaped=opts.ushaped, merge=opts.merge)
    return build_preset(opts.preset, cfg), cfg, opts.preset


def _cohort(topology: Topology, cfg: PresetConfig | None, seed: int, patients: int) -> dict[str, SiteData]:
    """A preset's synthetic cohort, or tensors of an experiment's declared shapes and label kinds."""
    if cfg is not None:
        return preset_data(topology, cfg, seed=seed, patients=patients)
    return study_data(compile_topology(topology), seed=seed, patients=patients)


def _defended(topology: Topology, opts: PrivacyOptions) -> Topology:
    """The flags' defenses on every site: input defenses on each cut, the label defense on each tail."""
    inputs: list[CutDefense] = []
    if opts.clip > 0:
        inputs.append(Clip(opts.clip))
    if opts.noise > 0:
        inputs.append(GaussianNoise(opts.noise))
    if opts.nopeek > 0:
        inputs.append(NoPeek(opts.nopeek, opts.nopeek_scale))  # type: ignore[arg-type]
    per_site: dict[str, list[CutDefense]] = {s: list(inputs) for s in topology.sites}
    if opts.label_defense:
        owners = [s for s in topology.sites if tail_segments(topology, s)]
        if not owners:
            raise ConfigError(f"--label-defense {opts.label_defense}: no site of '{topology.name}' keeps its labels "
                              "while another party sends it its output, so there is no gradient to protect",
                              hint="use a U-shaped topology (--preset ushaped, or --preset vertical --ushaped); "
                                   "where labels are sent to the server they leave in the clear")
        for s in owners:
            per_site[s].append(make_defense(opts.label_defense, opts.label_strength))
    return defend(topology, {s: d for s, d in per_site.items() if d})


def run_privacy(opts: PrivacyOptions, out: TextIO | None = None) -> dict[str, Any]:
    """Train, attack and write the card; returns the run summary with its ``privacy`` section."""
    out = out or sys.stdout
    _check(opts)
    topology, cfg, name = _topology(opts)
    topology = _defended(topology, opts)
    data = _cohort(topology, cfg, opts.seed, opts.patients)
    # The attacker's auxiliary patients: the same distribution, other people (another seed).
    aux = _cohort(topology, cfg, opts.seed + 7919, opts.aux_patients)
    run_dir = Path(opts.run_dir or f"runs/privacy-{safe_name(name)}-seed{opts.seed}")
    run = CardRun.start(topology, data, optimizer=lambda params: torch.optim.Adam(params, lr=opts.lr),
                        batch_size=opts.batch_size, seed=opts.seed)
    info = {"name": run_dir.name, "preset": topology.name, "transport": "local", "seed": opts.seed,
            "nopeek": opts.nopeek, "executor": "sequential", "privacy_card": f"{CARD_DIR}/card.json"}
    if opts.experiment:
        info["experiment"] = str(opts.experiment)
    summary = train_and_report(run.trainer, epochs=opts.epochs, info=info, run_dir=run_dir,
                               progress=opts.progress, out=out)
    print("attacking the cuts and the labels ...", file=out)
    card = attack(run, aux, decoder_steps=opts.decoder_steps, seed=opts.seed)
    summary["preset"] = topology.name
    summary["data"] = "memory"
    summary["privacy"] = card.section
    text = render_card(card.section, summary["metrics"])
    _write_card(run_dir / CARD_DIR, summary, card, text)
    print(text, file=out)
    print(f"card: {run_dir / CARD_DIR}", file=out)
    return summary


def _write_card(folder: Path, summary: dict[str, Any], card: PrivacyCard, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    for cut, (x, x_hat) in card.examples.items():
        ssim = card.section["cuts"][cut]["reconstruction"]["ssim"]
        figures[f"reconstruction {cut}"] = reconstruction_figure(
            cut, x, x_hat, ssim, folder / f"reconstruction_{safe_name(cut)}.png").name
    for task, rocs in card.rocs.items():
        png = folder / f"roc_{safe_name(task)}.png"
        figures[f"label leakage {task}"] = roc_figure(task, rocs, png).name
    keys = ("name", "preset", "seed", "epochs", "metrics", "dcor")
    keep: dict[str, Any] = {k: summary[k] for k in keys if k in summary}
    write_json({**keep, "privacy": card.section, "figures": figures}, folder / "card.json")
    (folder / "card.txt").write_text(text + "\n")
