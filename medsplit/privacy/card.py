"""The leakage report card: train with attackers listening, then attack every cut and every kept label.

``CardRun`` trains a topology in this process with a ``Tap`` on its transport; ``attack`` then runs, for every
segment whose output leaves a site, a reconstruction attack on held-out patients (and reads its dCor), and
for every task, either says its labels are sent in the clear or attacks the gradients that carry them. The
result is the ``privacy`` section of ``medsplit privacy --json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data import BatchSource, SiteData
from ..engine.trainer import SplitTrainer
from ..plan.plan import Plan
from ..topology.model import Topology
from ..transport import LocalTransport
from .labels import LabelLeak, label_leakage
from .reconstruction import reconstruct, score_reconstruction, train_decoder
from .tap import Tap, watch_rows

__all__ = ["CardRun", "PrivacyCard", "attack", "raw_inputs", "FIGURE_EXAMPLES"]

FIGURE_EXAMPLES = 6  # held-out patients shown per image cut in the figures


@dataclass
class CardRun:
    """A trainer whose every received gradient and every step's rows are kept for the attacks."""

    trainer: SplitTrainer
    tap: Tap
    rows: dict[int, dict[str, list[int]]]

    @classmethod
    def start(cls, topology: Topology, data: Mapping[str, SiteData], **trainer_kwargs: Any) -> CardRun:
        tap = Tap(LocalTransport())
        trainer = SplitTrainer(topology, data, transport=tap, **trainer_kwargs)
        return cls(trainer, tap, watch_rows(trainer))  # type: ignore[arg-type]


@dataclass
class PrivacyCard:
    """The card's numbers (``section``: the JSON contract) and, for the figures, examples and ROC scores."""

    section: dict[str, Any]
    examples: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # cut: (x, x_hat)
    # task: attacker: attack: (labels, scores), pooled over the last epoch
    rocs: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = field(default_factory=dict)


def raw_inputs(plan: Plan, segment: str) -> list[str]:
    """The data keys behind ``segment`` at its party: its own and those of the local segments before it."""
    party = plan.segments[segment].party
    keys, todo, seen = [], [segment], set()
    while todo:
        seg = plan.segments[todo.pop(0)]
        if seg.name in seen:
            continue
        seen.add(seg.name)
        keys += [k for k in seg.data_inputs if k not in keys]
        todo += [s for s in seg.segment_inputs if plan.segments[s].party == party]
    return keys


def _downstream(plan: Plan, segment: str) -> set[str]:
    out, todo = set(), [segment]
    while todo:
        s = todo.pop()
        if s not in out:
            out.add(s)
            todo += plan.consumers[s]
    return out


def _everything(source: BatchSource) -> dict[str, torch.Tensor]:
    rows: dict[str, torch.Tensor] = source.batch(list(range(len(source))))
    return rows


def _cut_report(run: CardRun, aux: Mapping[str, SiteData], segment: str, *, steps: int, seed: int
                ) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor] | None]:
    trainer, plan = run.trainer, run.trainer.plan
    site = plan.segments[segment].party
    runner = trainer.runners[site]
    aux_batch, val_batch = _everything(aux[site].train), _everything(trainer.data[site].val)
    cut_aux, cut_val = runner.cut_outputs(aux_batch)[segment], runner.cut_outputs(val_batch)[segment]
    by_input: dict[str, dict[str, Any]] = {}
    example = None
    for i, key in enumerate(raw_inputs(plan, segment)):
        decoder = train_decoder(cut_aux, aux_batch[key].float(), steps=steps, seed=seed + i)
        x, x_hat = val_batch[key].float(), reconstruct(decoder, cut_val)
        result = score_reconstruction(x, x_hat, aux_batch[key].float().mean(0))
        by_input[key] = result.as_dict()
        if result.kind == "image" and example is None:
            example = (x[:FIGURE_EXAMPLES], x_hat[:FIGURE_EXAMPLES])
    images = [r for r in by_input.values() if r["ssim"] is not None]
    tables = [r for r in by_input.values() if r["r2"] is not None]
    first = images[0] if images else tables[0]
    edges = [e for e in plan.edges.values() if e.src == segment]
    dcor = trainer.history[-1].dcor.get(segment) if trainer.history else None
    report = {"dcor": dcor, "reconstruction": {
        "mse": first["mse"], "psnr": first["psnr"], "ssim": images[0]["ssim"] if images else None,
        "r2": float(np.mean([t["r2"] for t in tables])) if tables else None,
        "baseline": first["baseline"], "by_input": by_input},
        "site": site, "to": sorted({e.dst_party for e in edges}), "shape": list(plan.out_shapes[segment])}
    return report, example


def _label_report(run: CardRun, task_name: str, pool_last: int
                  ) -> tuple[dict[str, Any], dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    trainer, plan = run.trainer, run.trainer.plan
    task = plan.tasks[task_name]
    flows = [f for f in plan.label_flows.values() if f.task == task.name]
    holders = set(plan.label_owners(task.label)) | {f.dst for f in flows}
    report: dict[str, Any] = {"shared": bool(flows), "sent_to": sorted({f.dst for f in flows}),
                              "norm_leak_auc": None, "direction_leak_auc": None, "attackers": {}}
    rocs: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    if task.loss != "bce":
        report["note"] = "gradient label attacks are defined for binary tasks; this task is not attacked"
        return report, rocs
    for (receiver, edge_name), received in sorted(run.tap.gradients.items()):
        edge = plan.edges[edge_name]
        if receiver in holders or task.head not in _downstream(plan, edge.dst):
            continue
        batches = []
        for step, grad in received:
            owner = next((s for s in run.rows.get(step, {}) if s in plan.label_owners(task.label)), None)
            if owner is not None:
                labels = trainer.data[owner].train.batch(run.rows[step][owner])[task.label]
                batches.append((grad, labels))
        leak: LabelLeak = label_leakage(batches, pool_last=pool_last)
        key = f"{receiver} via {edge_name}"
        report["attackers"][key] = {"norm_leak_auc": leak.norm_auc, "direction_leak_auc": leak.direction_auc,
                                    "batches": leak.batches, "patients": leak.patients, "positives": leak.positives}
        rocs[key] = leak.pooled
        for attack in ("norm", "direction"):
            value = getattr(leak, f"{attack}_auc")
            best = report[f"{attack}_leak_auc"]
            if value is not None and (best is None or value > best):
                report[f"{attack}_leak_auc"] = value
    return report, rocs


def attack(run: CardRun, aux: Mapping[str, SiteData], *, decoder_steps: int = 400, seed: int = 0) -> PrivacyCard:
    """Every attack of the card on a trained ``run``; ``aux`` holds each site's auxiliary patients (same
    distribution, other patients) in its ``train`` split."""
    plan = run.trainer.plan
    sites = {p.name for p in plan.topology.parties if p.data}
    cuts = sorted({e.src for e in plan.edges.values() if e.src_party in sites})
    card = PrivacyCard({"cuts": {}, "labels": {}, "defenses": {}})
    for i, segment in enumerate(cuts):
        report, example = _cut_report(run, aux, segment, steps=decoder_steps, seed=seed + 100 * i)
        card.section["cuts"][segment] = report
        if example is not None:
            card.examples[segment] = example
    for task in plan.tasks:
        report, rocs = _label_report(run, task, pool_last=run.trainer.steps_per_epoch())
        card.section["labels"][task] = report
        if rocs:
            card.rocs[task] = rocs
    for site in sorted(sites):
        card.section["defenses"][site] = [d.describe() for s in plan.topology.segments if s.party == site
                                          for d in s.defenses]
    return card
