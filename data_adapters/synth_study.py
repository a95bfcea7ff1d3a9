"""`medsplit synth --for EXP.yaml`: synthetic files for any experiment's sites, all driven by one latent outcome.

Each patient has a few latent factors; their sum is the outcome score. Every table column is a noisy mix of one
or two factors (the same column means the same thing at every site), every image shows a lesion whose strength
grows with the score, and every label is the score plus a little noise, cut into classes (binary, multiclass)
or scaled (regression). So any study designed on these files can learn, and vertical sites each hold part of
the signal. Vertical studies share ``overlap`` of each site's patients; the other presets give each site its own.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from medsplit.config.experiment import Experiment, load_experiment
from medsplit.errors import ConfigError

from .synth import SynthResult, site_yaml
from .synth_design import LabelDesign, SiteDesign, TableDesign, design_sites
from .synth_dicom import Subject, scanner, write_images

__all__ = ["synth_for_experiment"]

_FACTORS = 8
_LABEL_NOISE = 0.5
_NORMAL = NormalDist()


@dataclass(frozen=True)
class _Person:
    pid: str
    index: int
    factors: np.ndarray
    score: float  # the latent outcome, standard normal
    age: float
    sex: str
    lesion: tuple[float, float, float]


def _person(seed: int, index: int, pid: str, age_mean: float) -> _Person:
    """Everything about a patient follows from (seed, index): every site that holds them agrees on it."""
    rng = np.random.default_rng([seed, 17, index])
    f = rng.normal(size=_FACTORS)
    age = float(np.clip(age_mean + 12.0 * (0.5 * f[0] + 0.85 * rng.normal()), 18, 95))
    sex = "M" if rng.random() < 0.5 else "F"
    lesion = (float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.07, 0.12)))
    return _Person(pid, index, f, float(f.sum() / np.sqrt(_FACTORS)), round(age, 1), sex, lesion)


def _label_score(p: _Person, seed: int, j: int) -> float:
    return p.score + _LABEL_NOISE * float(np.random.default_rng([seed, 19, p.index, j]).normal())


def _label_text(lab: LabelDesign, s: float) -> str:
    """A label value as the site's file writes it: through its mapping where the site declares one."""
    sd = float(np.sqrt(1 + _LABEL_NOISE**2))
    if lab.kind == "regression":
        return f"{5.0 + 2.0 * s:.2f}"  # e.g. days in hospital
    if lab.kind == "binary":
        k = int(s > 0.3)  # about 40% positive
        if lab.positive is not None:
            return lab.positive if k else f"not_{lab.positive}"
    else:  # classes of about equal size
        k = min(int(_NORMAL.cdf(s / sd) * lab.classes), lab.classes - 1)
    return lab.values[k] if lab.values is not None else str(k)


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def _spread(name: str) -> float:
    """A column's standard deviation, in its own units."""
    return 1.0 + (_hash(name) >> 32) % 15


def _numeric(p: _Person, name: str, seed: int, shift: float, seen: tuple[int, ...]) -> float:
    """Column ``name`` of patient ``p``: a mix of one or two of the latent factors ``seen`` at its site, in a range
    of its own; a site's calibration moves it by ``shift`` standard deviations."""
    if name == "age":
        return p.age
    h = _hash(name)
    mix = p.factors[seen[h % len(seen)]] + (((h >> 8) % 100) / 100 - 0.5) * p.factors[seen[(h >> 16) % len(seen)]]
    noise = np.random.default_rng([seed, 23, p.index, h % 2**32]).normal()
    sign = 1.0 if (h >> 40) & 1 else -1.0
    return (5 + (h >> 24) % 95) + _spread(name) * (sign * mix + 0.8 * noise + shift)


def _category(p: _Person, name: str, vocabulary: list[str], seed: int, seen: tuple[int, ...]) -> str:
    if name == "sex" and {"F", "M"} <= set(vocabulary):
        return p.sex
    h = _hash(name)
    x = (p.factors[seen[h % len(seen)]] + 0.7 * np.random.default_rng([seed, 29, p.index, h % 2**32]).normal()) / 1.22
    return vocabulary[min(int(_NORMAL.cdf(x) * len(vocabulary)), len(vocabulary) - 1)]


def _write_table(path: Path, t: TableDesign, people: list[_Person], labels: list[LabelDesign],
                 texts: dict[str, dict[str, str]], seed: int, stream: int, shift: float, seen: tuple[int, ...]
                 ) -> None:
    rng = np.random.default_rng([seed, 31, stream])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([t.id_column, *t.numeric, *t.categorical, *(lab.name for lab in labels)])
        for p in people:
            # about 3% of lab values are missing, as in real exports; each site's calibration shifts its labs
            nums = ["" if c != "age" and rng.random() < 0.03 else round(_numeric(p, c, seed, shift, seen), 2)
                    for c in t.numeric]
            cats = [_category(p, c, v, seed, seen) for c, v in t.categorical.items()]
            w.writerow([p.pid, *nums, *cats, *(texts[lab.name][p.pid] for lab in labels)])


def synth_for_experiment(experiment: str | os.PathLike, out: str | os.PathLike, *, patients: int = 200,
                         seed: int = 0, overlap: float = 0.8, val_fraction: float = 0.2) -> SynthResult:
    """Write files for every site of ``experiment`` under ``out``, and ``out/experiment.yaml`` that reads them.

    Same arguments, same bytes. ``patients`` per site; in a vertical study (a joint schedule over several
    sites) ``overlap`` of each site's patients are held by every site.
    """
    if patients < 1 or not 0.0 <= overlap <= 1.0:
        raise ConfigError(f"need patients >= 1 and an overlap from 0 to 1, got {patients} and {overlap}",
                          hint="e.g. --patients 200 --overlap 0.85")
    exp = load_experiment(experiment)
    topology = exp.build_topology()
    shared = topology.schedule == "joint" and len(topology.sites) > 1
    designs = design_sites(exp, shared)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    held = _patients([d.name for d in designs], patients, seed, overlap if shared else None)
    home: dict[str, int] = {}
    for i, d in enumerate(designs):
        for pid in held[d.name]:
            home.setdefault(pid, i)
    order = {pid: k for k, pid in enumerate(dict.fromkeys(p for d in designs for p in held[d.name]))}
    scanners = [scanner(i, len(designs)) for i in range(len(designs))]
    people = {pid: _person(seed, order[pid], pid, scanners[home[pid]].age_mean) for pid in order}
    label_index = {name: j for j, name in enumerate(dict.fromkeys(lab.name for d in designs for lab in d.labels))}
    configs = {}
    for i, d in enumerate(designs):
        # Vertical sites each see their own share of the factors (so each holds part of the signal); sites with
        # their own patients see them all, the same column meaning the same thing at every site.
        seen = tuple(k for k in range(_FACTORS) if k % len(designs) == i % _FACTORS) if shared else \
            tuple(range(_FACTORS))
        configs[d.name] = _write_site(out / d.name, d, [people[pid] for pid in held[d.name]], i, len(designs),
                                      label_index, exp, seed, val_fraction, shift=0.0 if shared else 0.15, seen=seen)
    exp_path = out / "experiment.yaml"
    site_yaml(exp_path, _experiment(exp, designs, out), f"# written by `medsplit synth --for {exp.path} --seed "
              f"{seed}`: the experiment, each site reading the files written here\n")
    return SynthResult(out=out, experiment=exp_path, site_configs=configs, patients=held)


def _patients(sites: list[str], patients: int, seed: int, overlap: float | None) -> dict[str, list[str]]:
    """Patient IDs per site (MRN-like text): ``overlap`` shared by every site and the rest their own, or (None)
    every site its own."""
    n_common = int(round(overlap * patients)) if overlap is not None else 0
    n_own = patients - n_common
    rng = np.random.default_rng([seed, 1])
    ids = [f"{x:08d}" for x in rng.choice(10**8, size=n_common + n_own * len(sites), replace=False)]
    return {s: ids[:n_common] + ids[n_common + i * n_own:n_common + (i + 1) * n_own] for i, s in enumerate(sites)}


def _write_site(site_dir: Path, d: SiteDesign, people: list[_Person], i: int, n: int, label_index: dict[str, int],
                exp: Experiment, seed: int, val_fraction: float, *, shift: float, seen: tuple[int, ...]) -> Path:
    """A site's files, and its YAML. Sites with their own patients (``shift`` > 0) calibrate their labs apart."""
    site_dir.mkdir(parents=True, exist_ok=True)
    texts = {lab.name: {p.pid: _label_text(lab, _label_score(p, seed, label_index[lab.name])) for p in people}
             for lab in d.labels}
    shift *= i - (n - 1) / 2
    modalities: dict[str, Any] = {}
    for j, t in enumerate(d.tables):
        in_table = [lab for lab in d.labels if lab.source == t.key]
        _write_table(site_dir / f"{t.key}.csv", t, people, in_table, texts, seed, i * 16 + j, shift, seen)
        modalities[t.key] = {"kind": "table", "source": f"{t.key}.csv", "id_column": t.id_column,
                             "numeric": list(t.numeric), **({"categorical": dict(t.categorical)} if t.categorical
                                                            else {}),
                             **{k: v for k, v in t.entry.items() if k not in ("kind", "id_column", "numeric",
                                                                              "categorical")}}
    for j, m in enumerate(d.images):
        in_manifest = [lab.name for lab in d.labels if lab.source == m.key]
        subjects = [Subject(p.pid, p.sex, p.age, p.lesion, max(0.0, 1.0 + p.score),
                            {name: texts[name][p.pid] for name in in_manifest}) for p in people]
        write_images(site_dir / m.key, subjects, scanner(i, n), d.name, m.modality, m.spatial, seed, i * 16 + 8 + j,
                     in_manifest)
        modalities[m.key] = {"kind": "dicom", "source": f"{m.key}/manifest.csv", "modality": m.modality,
                             "spatial_size": list(m.spatial),
                             **{k: v for k, v in m.entry.items() if k not in ("kind", "modality", "spatial_size")}}
    cfg: dict[str, Any] = {"site": d.name, "split": d.split or {"val_fraction": val_fraction, "seed": seed},
                           "modalities": modalities}
    if d.labels:
        cfg["labels"] = {lab.name: lab.entry() for lab in d.labels}
    path = site_dir / "site.yaml"
    origin = f", from {d.template.name}" if d.template else ""
    site_yaml(path, cfg, f"# site {d.name}{origin}, written by `medsplit synth --for {Path(str(exp.path)).name} "
                         f"--seed {seed}`\n# check it with: medsplit data check --config site.yaml\n")
    return path


def _experiment(exp: Experiment, designs: list[SiteDesign], out: Path) -> dict[str, Any]:
    """The experiment as written, each site's config the YAML written for it; other paths still resolve."""
    raw = copy.deepcopy(dict(exp.raw))
    base = Path(str(exp.path)).parent

    def moved(value: str) -> str:
        p = Path(os.path.expanduser(value))
        return str(p) if p.is_absolute() else os.path.relpath(base / p, out.resolve())

    for site, d in zip(raw["sites"], designs, strict=True):
        site["config"] = f"{d.name}/site.yaml"
        for key in ("secret_file", "public_key"):
            if site.get(key):
                site[key] = moved(site[key])
    server = raw.get("server") or {}
    if server.get("run_dir"):
        server["run_dir"] = moved(server["run_dir"])
    return raw
