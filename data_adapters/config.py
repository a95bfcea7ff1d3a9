"""The site YAML (`medsplit site --config SITE.yaml`): typed, validated, with errors that name the file, key and fix."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from medsplit.config.loader import validate
from medsplit.config.node import NodeConfig
from medsplit.errors import ConfigError

from medsplit.suggest import did_you_mean, listing
from .dicom import DICOM_MODALITIES
from .ehr import CATEGORICAL_RULES, NUMERIC_RULES, MissingRules, TableSpec
from .labels import LABEL_KINDS, LabelSpec
from .transforms import RESIZE_MODES, AugmentConfig, PipelineConfig, default_pipeline, with_overrides

__all__ = [
    "SiteConfig",
    "DicomModality",
    "TableModality",
    "SplitConfig",
    "load_site_config",
    "parse_site_config",
    "RESERVED_KEYS",
]

#: top-level sections other components own; present keys are kept raw and not validated here
RESERVED_KEYS = ("node",)
_TOP = ("site", "modalities", "labels", "split", *RESERVED_KEYS)
_DICOM = ("kind", "source", "modality", "spatial_size", "pipeline", "cache_dir", "duplicates")
_TABLE = ("kind", "source", "id_column", "numeric", "categorical", "missing", "duplicates")
_DUPLICATE_RULES = ("first", "error")


@dataclass(frozen=True)
class DicomModality:
    """A DICOM key: ``source`` is a manifest CSV or a folder to discover studies in."""

    key: str
    source: Path
    modality: str
    spatial_size: tuple[int, ...]
    pipeline: PipelineConfig
    cache_dir: Path
    duplicates: str = "first"
    kind: str = "dicom"


@dataclass(frozen=True)
class TableModality:
    """A table key (EHR): one CSV or Parquet file, one row per patient."""

    key: str
    source: Path
    id_column: str
    numeric: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    missing: MissingRules = field(default_factory=MissingRules)
    duplicates: str = "first"
    kind: str = "table"

    def spec(self, labels: tuple[LabelSpec, ...] = (), config: str | None = None) -> TableSpec:
        return TableSpec(path=self.source, id_column=self.id_column, numeric=self.numeric,
                         categorical=dict(self.categorical), labels=labels, missing=self.missing,
                         duplicates=self.duplicates, key=self.key, config=config)


@dataclass(frozen=True)
class SplitConfig:
    """Patients go to validation by a seeded hash of their ID: sites with the same seed agree."""

    val_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class SiteConfig:
    site: str
    modalities: dict[str, DicomModality | TableModality]
    labels: dict[str, LabelSpec] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    path: Path | None = None
    node: NodeConfig | None = None  # how this site joins a run (medsplit.config.node)

    def labels_of(self, key: str) -> tuple[LabelSpec, ...]:
        return tuple(ls for ls in self.labels.values() if ls.source == key)


# ---------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice (plain YAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        k = loader.construct_object(key_node, deep=deep)
        if k in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {k!r} appears twice (first on line {seen[k] + 1})", key_node.start_mark)
        seen[k] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_site_config(path: str | os.PathLike) -> SiteConfig:
    """Read and validate a site YAML; paths in it are relative to the YAML's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"site config {path} does not exist",
                          hint="pass the path of the site's YAML, e.g. medsplit data check --config site.yaml")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}",
                          hint="fix the YAML syntax at the line shown")
    return parse_site_config(data, path)


def parse_site_config(data: Any, path: str | os.PathLike | None = None) -> SiteConfig:
    """Validate an already loaded mapping; ``path`` anchors relative paths and names the file in errors."""
    v = _Validator(Path(path) if path is not None else None)
    return v.site(data)


class _Validator:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.base = path.parent if path is not None else Path.cwd()

    def fail(self, key: str, message: str, fix: str) -> ConfigError:
        where = f"{self.path}: " if self.path else ""
        return ConfigError(f"{where}{key}: {message}", hint=fix)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, Mapping):
            raise self.fail(key or "(top level)", f"expected a mapping, got {type(value).__name__}",
                            f"write it as 'name: value' lines; allowed keys: {', '.join(allowed)}")
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else str(k), f"unknown key{did_you_mean(str(k), allowed)}",
                                f"allowed keys here: {', '.join(allowed)}")
        for k in required:
            if k not in value or value[k] is None:
                raise self.fail(f"{key}.{k}" if key else k, "is required", _EXAMPLES.get(k, f"add '{k}: ...'"))
        return dict(value)

    def choice(self, value: Any, key: str, options: tuple[str, ...], upper: bool = False) -> str:
        text = str(value).upper() if upper else str(value)
        if text not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(options)}{did_you_mean(text, options)}",
                            f"use one of: {', '.join(options)}")
        return text

    def number(self, value: Any, key: str, *, lo: float | None = None, hi: float | None = None,
               integer: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer:
            ok = float(value).is_integer()
        if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = f" in [{lo}, {hi}]" if lo is not None and hi is not None else (f" >= {lo}" if lo is not None else "")
            raise self.fail(key, f"{value!r} is not {'an integer' if integer else 'a number'}{rng}",
                            f"give {'an integer' if integer else 'a number'}{rng}")
        return int(value) if integer else float(value)

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, (str, int)) for x in value):
            raise self.fail(key, "expected a list of column names", f"write e.g. {key.split('.')[-1]}: [age, crp]")
        out = tuple(str(x) for x in value)
        if len(set(out)) != len(out):
            raise self.fail(key, "lists a column twice", "list each column once")
        return out

    def file(self, value: Any, key: str, *, folder_ok: bool) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "expected a path", "give a path relative to the YAML file's folder")
        p = Path(os.path.expanduser(value))
        p = p if p.is_absolute() else self.base / p
        if not p.exists():
            raise self.fail(key, f"{p} does not exist",
                            "fix the path; relative paths are resolved from the folder of this YAML file")
        if p.is_dir() and not folder_ok:
            raise self.fail(key, f"{p} is a folder", "point it at the table file (CSV or Parquet)")
        return p

    # -- sections --------------------------------------------------------------------------

    def site(self, data: Any) -> SiteConfig:
        if data is None:
            raise self.fail("(top level)", "the file is empty", "start from the example in data_adapters/README.md")
        d = self.mapping(data, "", _TOP, required=("site", "modalities"))
        name = d["site"]
        if not isinstance(name, str) or not name.strip():
            raise self.fail("site", "expected the site's name", "write e.g. site: hospital_a")
        mods = d["modalities"]
        if not isinstance(mods, Mapping) or not mods:
            raise self.fail("modalities", "expected a mapping from key to modality",
                            "write e.g. modalities: {image: {kind: dicom, source: manifest.csv, modality: CT, "
                            "spatial_size: [64, 64]}}")
        modalities = {}
        for key, spec in mods.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise self.fail(f"modalities.{key}", "a key must be a simple name such as image or ehr",
                                "use letters, digits and _")
            modalities[key] = self.modality(key, spec, name)
        split = self.split(d.get("split") or {})
        labels = self.labels(d.get("labels"), modalities)
        node = None
        if d.get("node") is not None:
            if not isinstance(d["node"], Mapping):
                raise self.fail("node", "expected a mapping", "write node: {experiment: ..., server: HOST:PORT}")
            node = validate(NodeConfig, d["node"], self.path, prefix="node")
        return SiteConfig(site=name.strip(), modalities=modalities, labels=labels, split=split,
                          path=self.path, node=node)

    def modality(self, key: str, spec: Any, site: str) -> DicomModality | TableModality:
        at = f"modalities.{key}"
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise self.fail(at, "needs kind: dicom or kind: table", "add kind: dicom (images) or kind: table (EHR)")
        kind = self.choice(spec["kind"], f"{at}.kind", ("dicom", "table"))
        if kind == "dicom":
            d = self.mapping(spec, at, _DICOM, required=("source", "modality", "spatial_size"))
            modality = self.choice(d["modality"], f"{at}.modality", DICOM_MODALITIES, upper=True)
            size = d["spatial_size"]
            if not isinstance(size, (list, tuple)) or len(size) not in (2, 3):
                raise self.fail(f"{at}.spatial_size", f"{size!r} is not 2 or 3 sizes",
                                "write [H, W] for 2D models or [D, H, W] for 3D models")
            size = tuple(int(self.number(s, f"{at}.spatial_size", lo=1, hi=4096, integer=True)) for s in size)
            pipeline = self.pipeline(d.get("pipeline") or {}, f"{at}.pipeline", modality, len(size))
            cache = d.get("cache_dir")
            cache_dir = (self.base / os.path.expanduser(cache)) if isinstance(cache, str) and cache.strip() else \
                self.base / ".medsplit_cache" / site / key
            return DicomModality(key=key, source=self.file(d["source"], f"{at}.source", folder_ok=True),
                                 modality=modality, spatial_size=size, pipeline=pipeline, cache_dir=cache_dir,
                                 duplicates=self.choice(d.get("duplicates", "first"), f"{at}.duplicates",
                                                        _DUPLICATE_RULES))
        d = self.mapping(spec, at, _TABLE, required=("source", "id_column"))
        numeric = self.names(d.get("numeric"), f"{at}.numeric")
        cat = d.get("categorical")
        if isinstance(cat, Mapping):
            categorical = {str(c): (None if voc is None else self.names(voc, f"{at}.categorical.{c}"))
                           for c, voc in cat.items()}
        else:
            categorical = {c: None for c in self.names(cat, f"{at}.categorical")}
        both = set(numeric) & set(categorical)
        if both:
            raise self.fail(f"{at}.categorical", f"{sorted(both)} also listed under numeric", "list a column once")
        if not numeric and not categorical:
            raise self.fail(at, "declares no feature columns", "add numeric: [...] and/or categorical: [...]")
        return TableModality(key=key, source=self.file(d["source"], f"{at}.source", folder_ok=False),
                             id_column=str(d["id_column"]), numeric=numeric, categorical=categorical,
                             missing=self.missing(d.get("missing") or {}, f"{at}.missing", numeric, categorical),
                             duplicates=self.choice(d.get("duplicates", "first"), f"{at}.duplicates", _DUPLICATE_RULES))

    def pipeline(self, spec: Any, at: str, modality: str, ndim: int) -> PipelineConfig:
        allowed = tuple(f.name for f in fields(PipelineConfig))
        d = self.mapping(spec, at, allowed)
        o: dict[str, Any] = {}
        for k in ("window", "percentiles"):
            if k in d and d[k] is not None:
                pair = d[k]
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise self.fail(f"{at}.{k}", f"{pair!r} is not a [lower, upper] pair", f"write {k}: [lower, upper]")
                lo, hi = (self.number(x, f"{at}.{k}") for x in pair)
                if lo >= hi:
                    raise self.fail(f"{at}.{k}", "lower must be below upper", f"write {k}: [lower, upper]")
                o[k] = (lo, hi)
            elif k in d:
                o[k] = None
        if "pixdim" in d:
            px = d["pixdim"]
            if px is not None and (not isinstance(px, (list, tuple)) or len(px) != ndim):
                raise self.fail(f"{at}.pixdim", f"{px!r} must have {ndim} spacings (one per spatial_size axis)",
                                f"write pixdim: [{', '.join(['1.0'] * ndim)}] (mm), or null to keep native spacing")
            o["pixdim"] = None if px is None else tuple(self.number(x, f"{at}.pixdim", lo=1e-3) for x in px)
        if "orientation" in d:
            ori = d["orientation"]
            if ori is not None and (not isinstance(ori, str) or sorted(ori.upper().replace("L", "R").replace(
                    "P", "A").replace("I", "S")) != ["A", "R", "S"]):
                raise self.fail(f"{at}.orientation", f"{ori!r} is not an axis code such as RAS or LPS",
                                "write orientation: RAS, or null to keep the file's orientation")
            o["orientation"] = ori.upper() if ori else None
        if "resize" in d:
            o["resize"] = self.choice(d["resize"], f"{at}.resize", RESIZE_MODES)
        if "strict_modality" in d:
            if not isinstance(d["strict_modality"], bool):
                raise self.fail(f"{at}.strict_modality", "expected true or false", "write strict_modality: true")
            o["strict_modality"] = d["strict_modality"]
        if "augment" in d:
            o["augment"] = self.augment(d["augment"] or {}, f"{at}.augment", ndim)
        return with_overrides(default_pipeline(modality), o)

    def augment(self, spec: Any, at: str, ndim: int) -> dict[str, Any]:
        allowed = tuple(f.name for f in fields(AugmentConfig))
        d = self.mapping(spec, at, allowed)
        out: dict[str, Any] = {}
        for k, val in d.items():
            if k == "enabled":
                if not isinstance(val, bool):
                    raise self.fail(f"{at}.enabled", "expected true or false", "write enabled: false to turn it off")
                out[k] = val
            elif k == "flip_axes":
                axes = val if isinstance(val, (list, tuple)) else [val]
                out[k] = tuple(int(self.number(a, f"{at}.flip_axes", lo=-ndim, hi=ndim - 1, integer=True)) for a in axes)
            elif k.endswith("_prob"):
                out[k] = self.number(val, f"{at}.{k}", lo=0.0, hi=1.0)
            else:
                out[k] = self.number(val, f"{at}.{k}", lo=0.0, hi=180.0 if k == "rotate_degrees" else 1.0)
        return out

    def missing(self, spec: Any, at: str, numeric: tuple[str, ...], categorical: Mapping[str, Any]) -> MissingRules:
        d = self.mapping(spec, at, tuple(f.name for f in fields(MissingRules)))
        out: dict[str, Any] = {}
        if "numeric" in d:
            out["numeric"] = self.choice(d["numeric"], f"{at}.numeric", NUMERIC_RULES)
        if "categorical" in d:
            out["categorical"] = self.choice(d["categorical"], f"{at}.categorical", CATEGORICAL_RULES)
        if "constant" in d:
            out["constant"] = self.number(d["constant"], f"{at}.constant")
        if "category" in d:
            out["category"] = str(d["category"])
        cols = d.get("columns") or {}
        if not isinstance(cols, Mapping):
            raise self.fail(f"{at}.columns", "expected column: rule pairs", "write columns: {crp: drop}")
        per: dict[str, str] = {}
        for c, rule in cols.items():
            if c in numeric:
                per[str(c)] = self.choice(rule, f"{at}.columns.{c}", NUMERIC_RULES)
            elif c in categorical:
                per[str(c)] = self.choice(rule, f"{at}.columns.{c}", CATEGORICAL_RULES)
            else:
                raise self.fail(f"{at}.columns.{c}", f"not a declared feature column{did_you_mean(str(c), [*numeric, *categorical])}",
                                "declare it under numeric or categorical first")
        out["columns"] = per
        return MissingRules(**out)

    def split(self, spec: Any) -> SplitConfig:
        d = self.mapping(spec, "split", ("val_fraction", "seed"))
        return SplitConfig(val_fraction=self.number(d.get("val_fraction", 0.2), "split.val_fraction", lo=0.0, hi=0.9),
                           seed=int(self.number(d.get("seed", 0), "split.seed", lo=0, integer=True)))

    def labels(self, spec: Any, modalities: Mapping[str, DicomModality | TableModality]) -> dict[str, LabelSpec]:
        if spec is None:
            return {}
        if isinstance(spec, (list, tuple)):
            spec = {str(n): "binary" for n in spec}
        if not isinstance(spec, Mapping):
            raise self.fail("labels", "expected a mapping from label column to its kind",
                            "write labels: {diagnosis: binary} or {grade: {kind: multiclass, classes: 3, source: ehr}}")
        out: dict[str, LabelSpec] = {}
        tables = [k for k, m in modalities.items() if m.kind == "table"]
        for name, ls in spec.items():
            at = f"labels.{name}"
            ls = {"kind": ls} if isinstance(ls, str) or ls is None else ls
            d = self.mapping(ls, at, ("kind", "classes", "source"))
            kind = self.choice(d.get("kind") or "binary", f"{at}.kind", LABEL_KINDS)
            classes = 2
            if kind == "multiclass":
                if "classes" not in d:
                    raise self.fail(f"{at}.classes", "is required for a multiclass label",
                                    "write classes: N (values are 0..N-1); sites must agree on N")
                classes = int(self.number(d["classes"], f"{at}.classes", lo=2, hi=100000, integer=True))
            source = d.get("source")
            if source is None:
                candidates = tables if len(tables) == 1 else (list(modalities) if len(modalities) == 1 else [])
                if not candidates:
                    raise self.fail(f"{at}.source", "cannot tell which modality's file holds this label",
                                    f"add source: <one of {', '.join(modalities)}>")
                source = candidates[0]
            elif source not in modalities:
                raise self.fail(f"{at}.source", f"{source!r} is not a modality key{did_you_mean(str(source), modalities)}",
                                f"use one of: {listing(modalities)}")
            m = modalities[source]
            if m.kind == "table" and (name in m.numeric or name in m.categorical):
                raise self.fail(f"{at}", f"the label is also a feature of modalities.{source}",
                                "remove it from numeric/categorical: a feature that is the label leaks the answer")
            if m.kind == "dicom" and m.source.is_dir():
                raise self.fail(f"{at}.source", f"modalities.{source} is a discovered folder and holds no labels",
                                "use a manifest CSV with the label column, or put the label in a table")
            out[str(name)] = LabelSpec(name=str(name), kind=kind, classes=classes, source=source)
        return out


_EXAMPLES = {
    "site": "add site: <name of this hospital>",
    "modalities": "add modalities: {image: {kind: dicom, source: manifest.csv, modality: CT, spatial_size: [64, 64]}}",
    "source": "add source: <manifest CSV or folder for dicom, CSV/Parquet file for table>",
    "modality": f"add modality: one of {', '.join(DICOM_MODALITIES)}",
    "spatial_size": "add spatial_size: [H, W] or [D, H, W] (the model's input size)",
    "id_column": "add id_column: <the column that holds the patient ID>",
}
