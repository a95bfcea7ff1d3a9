"""What synthetic data an experiment needs, site by site: its tables, images and labels, as designs to write.

A site whose experiment entry names an existing site YAML (``config:``) is designed from that YAML: its columns,
vocabularies, image sizes, pipelines and label mappings, checked against the shapes and tasks the experiment
declares. Any other site is designed from the experiment alone: a table of the declared width, images of the
declared shape, and each label in the form its task needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsplit.config.experiment import Experiment
from medsplit.config.loader import config_error, load_yaml, validate
from medsplit.config.sections import TaskEntry

from .site_schema import DicomFile, LabelFile, SiteFile, TableFile
from .synth import image_pipeline
from .synth_dicom import PROJECTION

__all__ = ["TableDesign", "ImageDesign", "LabelDesign", "SiteDesign", "design_sites", "LABS"]

#: names for invented lab columns (then lab_33, lab_34, ...)
LABS = ("crp", "wbc", "lactate", "creatinine", "sodium", "potassium", "hemoglobin", "platelets", "albumin",
        "bilirubin", "glucose", "urea", "heart_rate", "resp_rate", "sbp", "dbp", "temperature", "spo2", "bmi", "alt",
        "ast", "inr", "troponin", "bnp", "ferritin", "ldh", "calcium", "magnesium", "phosphate", "chloride",
        "bicarbonate", "ph")


@dataclass
class TableDesign:
    """A table key: its columns (numeric, categorical with their vocabularies) and the rest of its YAML entry."""

    key: str
    id_column: str
    numeric: list[str]
    categorical: dict[str, list[str]]
    entry: dict[str, Any] = field(default_factory=dict)  # what the site YAML says besides source

    @property
    def width(self) -> int:
        """Features after encoding: one per numeric column, one per category and one for unseen values."""
        return len(self.numeric) + sum(len(v) + 1 for v in self.categorical.values())


@dataclass
class ImageDesign:
    """A DICOM key: its modality and spatial size ([H, W] or [D, H, W]) and the rest of its YAML entry."""

    key: str
    modality: str
    spatial: list[int]
    entry: dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelDesign:
    """A label column: kind, classes, text mapping (``values`` or ``positive``) and the key whose file holds it."""

    name: str
    kind: str
    classes: int
    source: str
    values: list[str] | None = None
    positive: str | None = None

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "source": self.source}
        if self.kind == "multiclass" and self.values is None:
            out["classes"] = self.classes
        if self.values is not None:
            out["values"] = list(self.values)
        if self.positive is not None:
            out["positive"] = self.positive
        return out


@dataclass
class SiteDesign:
    name: str
    tables: list[TableDesign]
    images: list[ImageDesign]
    labels: list[LabelDesign]
    split: dict[str, Any] | None = None
    template: Path | None = None


def design_sites(exp: Experiment, shared: bool) -> list[SiteDesign]:
    """A design per site of ``exp``; invented table columns differ between sites when ``shared`` (vertical)."""
    tasks = {t.label: t for t in exp.tasks}
    designs, used_labs = [], 0
    for i, site in enumerate(exp.sites):
        raw = exp.raw["sites"][i]
        if site.config is not None and site.config.is_file():
            designs.append(_from_template(exp, i, site.config, tasks))
        else:
            designs.append(_from_experiment(exp, i, raw, tasks, used_labs))
            if shared:  # vertical sites hold different columns of the same patients
                used_labs += sum(len(t.numeric) - ("age" in t.numeric) for t in designs[-1].tables)
    return designs


# --- from the experiment alone -------------------------------------------------------------------------


def _from_experiment(exp: Experiment, i: int, raw: dict[str, Any], tasks: dict[str, TaskEntry],
                     first_lab: int) -> SiteDesign:
    site = exp.sites[i]
    tables, images = [], []
    for key, shape in site.shapes.items():
        declared = raw["modalities"][key]
        at = f"sites[{i}].modalities.{key}"
        if (declared.get("kind") or ("table" if len(shape) == 1 else "dicom")) == "table":
            tables.append(_invented_table(key, shape[0], first_lab, site.labels))
            first_lab += len(tables[-1].numeric) - ("age" in tables[-1].numeric)
            continue
        modality = str(declared.get("modality") or "CT").upper()
        if shape[0] != 1:
            raise config_error(exp.path, f"{at}.shape", f"synthetic images have one channel, not {shape[0]}",
                               f"write shape: [1, {', '.join(map(str, shape[1:]))}] to synthesize data for it")
        if modality in PROJECTION and len(shape) == 4:
            raise config_error(exp.path, f"{at}.shape", f"a {modality} radiograph is 2D, not {list(shape)}",
                               "write shape: [1, H, W], or modality: CT or MR for a volume")
        if modality not in ("CT", "MR", *PROJECTION):
            raise config_error(exp.path, f"{at}.modality", f"synth writes CT, MR, CR and DX, not {modality}",
                               "write modality: CT, MR, CR or DX")
        pipeline = image_pipeline(modality)
        images.append(ImageDesign(key, modality, list(shape[1:]), {"pipeline": pipeline} if pipeline else {}))
    holder = tables[0].key if tables else images[0].key
    labels = [_label_for(name, tasks.get(name), holder) for name in site.labels]
    return SiteDesign(site.name, tables, images, labels)


def _invented_table(key: str, width: int, first_lab: int, labels: tuple[str, ...]) -> TableDesign:
    """``width`` features: age, sex (F, M, unseen) and labs when there is room for them, else labs only; no column
    takes the name of one of the site's ``labels``."""
    demographics = width >= 5
    n_labs = width - 4 if demographics else width
    names = (LABS[j] if j < len(LABS) else f"lab_{j + 1}" for j in range(first_lab, first_lab + n_labs + len(labels)))
    labs = [n for n in names if n not in labels][:n_labs]
    return TableDesign(key, "patient_id", (["age"] if demographics else []) + labs,
                       {"sex": ["F", "M"]} if demographics else {},
                       {"missing": {"numeric": "median", "categorical": "most_frequent"}})


def _label_for(name: str, task: TaskEntry | None, holder: str) -> LabelDesign:
    if task is None or task.kind == "binary":
        return LabelDesign(name, "binary", 2, holder)
    return LabelDesign(name, task.kind, task.classes if task.kind == "multiclass" else 1, holder)


# --- from the site's own YAML ---------------------------------------------------------------------------


def _from_template(exp: Experiment, i: int, path: Path, tasks: dict[str, TaskEntry]) -> SiteDesign:
    """The site's YAML says which columns, sizes and label mappings it reads; the experiment's shapes must agree."""
    doc = validate(SiteFile, load_yaml(path, "site config"), path)
    site = exp.sites[i]
    tables, images = [], []
    for key, spec in doc.modalities.items():
        kind = spec.get("kind") if isinstance(spec, dict) else None
        entry = {k: v for k, v in spec.items() if k not in ("source", "cache_dir")} if isinstance(spec, dict) else {}
        if kind == "table":
            t = validate(TableFile, spec, path, prefix=f"modalities.{key}")
            open_vocabulary = [c for c, v in t.categorical.items() if v is None]
            if open_vocabulary:
                raise config_error(path, f"modalities.{key}.categorical.{open_vocabulary[0]}",
                                   "has no vocabulary, so the width of synthetic rows cannot be known",
                                   f"list its categories, e.g. {open_vocabulary[0]}: [a, b]")
            tables.append(TableDesign(key, t.id_column, list(t.numeric), {c: list(v or ()) for c, v in
                                                                          t.categorical.items()}, entry))
        elif kind == "dicom":
            d = validate(DicomFile, spec, path, prefix=f"modalities.{key}")
            images.append(ImageDesign(key, d.modality, list(d.spatial_size), entry))
        else:
            raise config_error(path, f"modalities.{key}.kind", "is required: dicom or table",
                               "add kind: dicom (images) or kind: table (EHR)")
    _agree(exp, i, path, tables, images)
    keys = [t.key for t in tables] + [m.key for m in images]
    labels = [_template_label(exp, i, path, name, ls, tables, keys, tasks.get(name)) for name, ls in doc.labels.items()]
    missing = [n for n in site.labels if n not in doc.labels]
    if missing:
        raise config_error(exp.path, f"sites[{i}].labels", f"lists '{missing[0]}', which {path} does not declare",
                           f"declare it under labels: in {path.name}, or remove it here")
    split = doc.split.model_dump() if doc.split is not None else None
    return SiteDesign(site.name, tables, images, labels, split, path)


def _agree(exp: Experiment, i: int, path: Path, tables: list[TableDesign], images: list[ImageDesign]) -> None:
    """Each shape the experiment declares for the site is the one its YAML produces."""
    produced = {t.key: (t.width,) for t in tables} | {m.key: (1, *m.spatial) for m in images}
    for key, shape in exp.sites[i].shapes.items():
        at = f"sites[{i}].modalities.{key}.shape"
        if key not in produced:
            raise config_error(exp.path, f"sites[{i}].modalities.{key}", f"{path} has no modality '{key}'",
                               f"use a key the site YAML declares: {', '.join(produced)}")
        if tuple(shape) != produced[key]:
            what = "encodes to" if len(produced[key]) == 1 else "produces"
            raise config_error(exp.path, at, f"is {list(shape)}, but {path}'s modalities.{key} {what} "
                               f"{list(produced[key])}", f"write shape: {list(produced[key])}, or change the site YAML")


def _template_label(exp: Experiment, i: int, path: Path, name: str, ls: LabelFile, tables: list[TableDesign],
                    keys: list[str], task: TaskEntry | None) -> LabelDesign:
    source = ls.source or (tables[0].key if len(tables) == 1 else keys[0] if len(keys) == 1 else None)
    if source is None or source not in keys:
        raise config_error(path, f"labels.{name}.source", "does not name one of this site's modalities",
                           f"add source: <one of {', '.join(keys)}>")
    classes = len(ls.values) if ls.kind == "multiclass" and ls.values else ls.classes or 2
    if task is not None and (task.kind != ls.kind or (ls.kind == "multiclass" and task.classes != classes)):
        wanted = f"{task.kind} with {task.classes} classes" if task.kind == "multiclass" else task.kind
        raise config_error(path, f"labels.{name}", f"is {ls.kind}, but task '{task.name}' of {exp.path} is {wanted}",
                           "make the site's label and the experiment's task the same kind")
    return LabelDesign(name, ls.kind, classes if ls.kind != "regression" else 1, source,
                       list(ls.values) if ls.values else None, ls.positive)
