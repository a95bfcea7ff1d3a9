"""A preset's sites backed by a synthetic cohort on disk: synthesize once, read back as a hospital would."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medsplit.data import SiteData as EngineSiteData
from medsplit.meter import Meter
from medsplit.topology import Topology
from medsplit.transport.local import LocalTransport

from .align import align_in_process
from .batches import DatasetSource
from .config import load_site_config
from .report import DataReport
from .site_data import open_site_data
from .synth import synth_cohort

__all__ = ["CohortData", "cohort_for_preset", "PARTY_NAMES"]

#: how the cohort's sites (site_1, site_2, ...) are named in each preset's topology
PARTY_NAMES: dict[str, Callable[[int], list[str]]] = {
    "vanilla": lambda n: ["hospital"], "ushaped": lambda n: ["hospital"], "multitask": lambda n: ["hospital"],
    "multihop": lambda n: ["hospital"], "vertical": lambda n: ["imaging", "ehr"],
    "horizontal": lambda n: [f"hospital_{i + 1}" for i in range(n)],
    "splitfed": lambda n: [f"hospital_{i + 1}" for i in range(n)],
}


@dataclass
class CohortData:
    """What the engine needs from the files: per-party datasets, shapes, reports, and where they came from."""

    root: Path
    splits: dict[str, tuple]  # party -> (train SiteDataset, val SiteDataset), aligned for vertical
    shapes: dict[str, dict[str, tuple[int, ...]]]
    reports: dict[str, DataReport]
    aligned: int | None  # common patients after PSI (vertical), else None

    def engine_data(self, topology: Topology) -> dict[str, EngineSiteData]:
        """Per party, batches of exactly the data and label keys its place in ``topology`` declares."""
        out = {}
        for party in topology.parties:
            if party.name in self.splits:
                keys = tuple(party.data) + tuple(party.labels)
                train, val = self.splits[party.name]
                out[party.name] = EngineSiteData(DatasetSource(train, keys), DatasetSource(val, keys))
        return out


def cohort_for_preset(preset: str, *, sites: int, patients: int, seed: int, root: str | os.PathLike,
                      meter: Meter | None = None) -> CohortData:
    """Synthesize (or reuse) a cohort under ``root`` and open each site's files with its site YAML.

    Vertical sites are aligned by PSI over an in-process transport, metered in ``meter``.
    """
    parties = PARTY_NAMES[preset](sites)
    layout = "vertical" if preset == "vertical" else "horizontal"
    out = Path(root) / f"{layout}-{len(parties)}x{patients}-seed{seed}"
    if not (out / "experiment.yaml").exists():  # same arguments, same bytes: reuse is safe
        synth_cohort(out, sites=len(parties), patients=patients, seed=seed, layout=layout)
    opened, reports, shapes = {}, {}, {}
    for i, party in enumerate(parties):
        cfg = load_site_config(out / f"site_{i + 1}" / "site.yaml")
        site_data, report = open_site_data(cfg)
        opened[party], reports[party] = site_data, report
        shapes[party] = dict(site_data.shapes)
    splits = {p: (d.train, d.val) for p, d in opened.items()}
    aligned = None
    if layout == "vertical":
        leader = next(p for p, d in opened.items() if d.labels)
        # A seeded order key makes the demo reproducible; a deployment lets the leader draw a random one.
        order_key = hashlib.sha256(f"medsplit-demo-order:{seed}".encode()).digest()
        orders = align_in_process({p: d.row_ids for p, d in opened.items()}, leader, LocalTransport(),
                                  meter or Meter(), order_key=order_key)
        splits = {p: opened[p].align(orders[p]) for p in parties}
        aligned = len(orders[leader])
    return CohortData(out, splits, shapes, reports, aligned)
