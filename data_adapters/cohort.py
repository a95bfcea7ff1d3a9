"""Sites opened from their YAML files as their nodes would, and synthetic cohorts ready to run as experiments."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import yaml

from medsplit.data import SiteData as EngineSiteData
from medsplit.errors import ConfigError
from medsplit.meter import Meter
from medsplit.topology import Topology
from medsplit.transport.local import LocalTransport

from .align import align_in_process
from .batches import DatasetSource
from .config import load_site_config
from .report import DataReport
from .site_data import open_site_data
from .synth import synth_cohort

__all__ = ["CohortData", "open_sites", "demo_experiment", "PARTY_NAMES"]

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
    sites: dict = None  # party -> the opened site data (data_adapters.site_data.SiteData)
    orders: dict = None  # party -> agreed patient order (vertical), else None

    def all_rows(self, topology: Topology) -> dict[str, EngineSiteData]:
        """Every row of each party (train and validation, aligned for vertical), without augmentation."""
        from .site_data import SiteDataset

        out = {}
        for party in topology.parties:
            if party.name in self.splits:
                site = self.sites[party.name]
                ids = (self.orders or {}).get(party.name) or site.row_ids
                labels = tuple(k for k in party.labels if k in site.labels)
                ds = SiteDataset(site, ids, train=False)
                out[party.name] = EngineSiteData(DatasetSource(ds, tuple(party.data) + labels),
                                                 DatasetSource(ds, tuple(party.data) + labels))
        return out

    def engine_data(self, topology: Topology) -> dict[str, EngineSiteData]:
        """Per party, batches of exactly the data and label keys its place in ``topology`` declares."""
        out = {}
        for party in topology.parties:
            if party.name in self.splits:
                keys = tuple(party.data) + tuple(party.labels)
                train, val = self.splits[party.name]
                out[party.name] = EngineSiteData(DatasetSource(train, keys), DatasetSource(val, keys))
        return out


def open_sites(site_configs: Mapping[str, str | os.PathLike], *, align: bool, meter: Meter | None = None,
               order_key: bytes | None = None, root: Path | None = None) -> CohortData:
    """Open each party's data with its site YAML, as its site node would.

    With ``align`` (vertical sites) the sites find their common patients by PSI over an in-process
    transport, metered in ``meter``; the site that owns labels leads.
    """
    opened, reports, shapes = {}, {}, {}
    for party, path in site_configs.items():
        site_data, report = open_site_data(load_site_config(path))
        opened[party], reports[party] = site_data, report
        shapes[party] = dict(site_data.shapes)
    splits = {p: (d.train, d.val) for p, d in opened.items()}
    aligned, orders = None, None
    if align and len(opened) > 1:
        leaders = [p for p, d in opened.items() if d.labels]
        if len(leaders) != 1:
            raise ConfigError(f"vertical sites need exactly one site that owns the labels, found {leaders or 'none'}",
                              hint="declare the labels in one site's YAML (labels:)")
        orders = align_in_process({p: d.row_ids for p, d in opened.items()}, leaders[0], LocalTransport(),
                                  meter or Meter(), order_key=order_key)
        splits = {p: opened[p].align(orders[p]) for p in opened}
        aligned = len(orders[leaders[0]])
    common = Path(os.path.commonpath([Path(p).resolve().parent for p in site_configs.values()]))
    return CohortData(root or common, splits, shapes, reports, aligned, opened, orders)


def demo_experiment(preset: str, *, sites: int, patients: int, seed: int, root: str | os.PathLike,
                    topology: Mapping | None = None, training: Mapping | None = None) -> Path:
    """Synthesize (or reuse) a cohort for ``preset`` under ``root`` and write an experiment YAML for it."""
    parties = PARTY_NAMES[preset](sites)
    layout = "vertical" if preset == "vertical" else "horizontal"
    out = Path(root) / f"{layout}-{len(parties)}x{patients}-seed{seed}"
    if not (out / "experiment.yaml").exists():  # same arguments, same bytes: reuse is safe
        synth_cohort(out, sites=len(parties), patients=patients, seed=seed, layout=layout)
    data = yaml.safe_load((out / "experiment.yaml").read_text())
    data["experiment"] = f"demo-{preset}-seed{seed}"
    data["topology"] = {"preset": preset, **(topology or {})}
    data["training"] = dict(training or {})
    for site, party in zip(data["sites"], parties):
        site["party"] = party
    path = out / f"demo-{preset}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
