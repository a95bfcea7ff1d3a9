"""Every site of an experiment opened from its YAML on this machine, and synthetic cohorts ready to run.

This is where the core meets site data for simulations: each site's files are read through its own data
pipeline (``data_adapters``), vertical sites are aligned by private set intersection over an in-process
transport (metered like every other crossing), and the engine gets the rows each party's place declares.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data_adapters.config import load_site_config
from data_adapters.report import DataReport
from data_adapters.site_data import SiteFiles, open_site_data
from data_adapters.synth import synth_cohort
from medsplit.align import align_in_process, psi_leader
from medsplit.config.loader import load_yaml
from medsplit.data import Declared, SiteData
from medsplit.engine.checks import check_site_data
from medsplit.plan import compile_topology
from medsplit.topology import Topology, preset_spec
from medsplit.transport import LocalTransport
from medsplit.wire import Meter

__all__ = ["Cohort", "open_sites", "demo_experiment"]


@dataclass
class Cohort:
    """Every site of an experiment, opened: its files, reports and (vertical) the agreed patient order."""

    sites: dict[str, SiteFiles]  # party -> the site's data as read from its files
    reports: dict[str, DataReport]
    orders: dict[str, list[str]] | None  # party -> agreed patient order (vertical), else None

    @property
    def aligned(self) -> int | None:
        """Common patients after PSI (vertical), else None."""
        return len(next(iter(self.orders.values()))) if self.orders else None

    def shapes(self, party: str) -> dict[str, tuple[int, ...]]:
        return dict(self.sites[party].shapes)

    def engine_data(self, topology: Topology, *, every_row: bool = False) -> dict[str, SiteData]:
        """Per party, batches of exactly the data and label keys its place in ``topology`` declares.

        With ``every_row`` both splits hold every row (aligned, without augmentation): predictions.
        """
        out = {}
        for party in topology.parties:
            if party.name in self.sites:
                site = self.sites[party.name]
                labels = tuple(k for k in party.labels if not every_row or k in site.labels)
                order = self.orders.get(party.name) if self.orders else None
                out[party.name] = site.open(tuple(party.data) + labels, order, every_row=every_row)
        return out


def open_sites(site_configs: Mapping[str, str | os.PathLike], topology: Topology, *, meter: Meter | None = None,
               context: bytes = b"", declared: Declared | None = None, require_labels: bool = True) -> Cohort:
    """Open each party's data with its site YAML, as its site node would, and check it against ``topology``
    (``declared``: the experiment that declares it, named in the fixes) with the node's own check.

    Vertical sites (a joint schedule with several sites) find their common patients by PSI over an
    in-process transport, metered in ``meter``, led by the labels' site; ``context`` names the study, so
    that the order is the one its nodes agree on.
    """
    sites, reports = {}, {}
    plan = compile_topology(topology)
    for party, path in site_configs.items():
        sites[party], reports[party] = open_site_data(load_site_config(path))
        check_site_data(plan, party, sites[party].holding(), declared=declared, require_labels=require_labels)
    orders = None
    if topology.schedule == "joint" and len(sites) > 1:
        orders = align_in_process({p: d.row_ids for p, d in sites.items()}, psi_leader(topology), LocalTransport(),
                                  meter or Meter(), context=context)
    return Cohort(sites, reports, orders)


def demo_experiment(preset: str, *, sites: int, patients: int, seed: int, root: str | os.PathLike,
                    topology: Mapping | None = None, training: Mapping | None = None) -> Path:
    """Synthesize (or reuse) a cohort for ``preset`` under ``root`` and write an experiment YAML for it."""
    spec = preset_spec(preset)
    parties = spec.site_parties(spec.cohort_sites(sites))
    out = Path(root) / f"{spec.layout}-{len(parties)}x{patients}-seed{seed}"
    if not (out / "experiment.yaml").exists():  # same arguments, same bytes: reuse is safe
        synth_cohort(out, sites=len(parties), patients=patients, seed=seed, layout=spec.layout)
    cohort = load_yaml(out / "experiment.yaml", "experiment file")
    # The cohort's sites with the data and labels the preset's own study uses (PRESETS' site_data); the rest is
    # this demo's (a cohort cached by an older version may carry keys the experiment no longer accepts).
    layout = spec.site_data(len(parties))
    entries: list[dict[str, Any]] = []
    for site, party in zip(cohort["sites"], parties, strict=False):
        keys, labels = layout[party]
        entries.append({"name": site["name"], "config": site["config"], "party": party,
                      "modalities": {k: m for k, m in site["modalities"].items() if k in keys},
                      "labels": [label for label in site.get("labels", []) if label in labels]})
    data = {"experiment": f"demo-{preset}-seed{seed}", "seed": seed, "topology": {"preset": preset, **(topology or {})},
            "training": dict(training or {}), "sites": entries}
    path = out / f"demo-{preset}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
