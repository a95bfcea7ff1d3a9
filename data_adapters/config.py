"""The site YAML (`medsplit site --config SITE.yaml`): typed, validated, with errors that name the file, key and fix.

What the file may say is modelled in ``site_schema`` (pydantic, through the one loader of ``medsplit.config``);
this module resolves it: paths against the YAML's folder, the modality's default pipeline under the file's
overrides, label sources, and the checks that span keys (a label that is also a feature, a rule for a column
that is not declared).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from medsplit.config.loader import StrictModel, config_error, load_yaml, validate
from medsplit.config.node import NodeConfig
from medsplit.suggest import did_you_mean, listing

from .ehr import CATEGORICAL_RULES, NUMERIC_RULES, MissingRules, TableSpec
from .labels import LabelSpec
from .site_schema import DicomFile, LabelFile, SiteFile, SplitConfig, TableFile
from .transforms import PipelineConfig, default_pipeline, with_overrides

__all__ = ["SiteConfig", "DicomModality", "TableModality", "SplitConfig", "load_site_config", "parse_site_config"]

_KINDS = ("dicom", "table")


class DicomModality(StrictModel):
    """A DICOM key: ``source`` is a manifest CSV or a folder to discover studies in."""

    key: str
    source: Path
    modality: str
    spatial_size: tuple[int, ...]
    pipeline: PipelineConfig
    cache_dir: Path
    duplicates: str = "first"
    kind: Literal["dicom"] = "dicom"


class TableModality(StrictModel):
    """A table key (EHR): one CSV or Parquet file, one row per patient."""

    key: str
    source: Path
    id_column: str
    numeric: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[str, ...] | None] = {}
    missing: MissingRules = MissingRules()
    duplicates: str = "first"
    kind: Literal["table"] = "table"

    def spec(self, labels: tuple[LabelSpec, ...] = (), config: str | None = None) -> TableSpec:
        return TableSpec(path=self.source, id_column=self.id_column, numeric=self.numeric,
                         categorical=dict(self.categorical), labels=labels, missing=self.missing,
                         duplicates=self.duplicates, key=self.key, config=config)


class SiteConfig(StrictModel):
    """A site's YAML, resolved: absolute paths, full pipelines, every label's source."""

    site: str
    modalities: dict[str, DicomModality | TableModality]
    labels: dict[str, LabelSpec] = {}
    split: SplitConfig = SplitConfig()
    path: Path | None = None
    node: NodeConfig | None = None  # how this site joins a run (medsplit.config.node)

    def labels_of(self, key: str) -> tuple[LabelSpec, ...]:
        return tuple(ls for ls in self.labels.values() if ls.source == key)


def load_site_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read and validate a site YAML; paths in it are relative to the YAML's folder."""
    data = load_yaml(path, "site config",
                     example="pass the path of the site's YAML, e.g. medsplit data check --config site.yaml")
    return parse_site_config(data, path)


def parse_site_config(data: Any, path: str | os.PathLike[str] | None = None) -> SiteConfig:
    """Validate an already loaded mapping; ``path`` anchors relative paths and names the file in errors."""
    where = Path(path) if path is not None else None
    return _Resolver(where).site(validate(SiteFile, data, where))


class _Resolver:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.base = path.parent if path is not None else Path.cwd()

    def fail(self, key: str, problem: str, fix: str) -> Exception:
        return config_error(self.path, key, problem, fix)

    def file(self, value: str, key: str, *, folder_ok: bool) -> Path:
        p = Path(os.path.expanduser(value))
        p = p if p.is_absolute() else self.base / p
        if not p.exists():
            raise self.fail(key, f"{p} does not exist",
                            "fix the path; relative paths are resolved from the folder of this YAML file")
        if p.is_dir() and not folder_ok:
            raise self.fail(key, f"{p} is a folder", "point it at the table file (CSV or Parquet)")
        return p

    def site(self, doc: SiteFile) -> SiteConfig:
        modalities: dict[str, DicomModality | TableModality] = {}
        for key, spec in doc.modalities.items():
            at = f"modalities.{key}"
            if not key.isidentifier():
                raise self.fail(at, "a key must be a simple name such as image or ehr", "use letters, digits and _")
            if not isinstance(spec, Mapping):
                raise self.fail(at, f"expected a mapping of keys, got {type(spec).__name__}",
                                "write it as 'key: value' lines, starting with kind: dicom or kind: table")
            kind = spec.get("kind")
            if kind == "dicom":
                modalities[key] = self.dicom(key, validate(DicomFile, spec, self.path, prefix=at), doc.site)
            elif kind == "table":
                modalities[key] = self.table(key, validate(TableFile, spec, self.path, prefix=at))
            else:
                raise self.fail(f"{at}.kind", "is required: dicom or table" if kind is None else
                                f"{kind!r} is not one of dicom, table{did_you_mean(str(kind), _KINDS)}",
                                "add kind: dicom (images) or kind: table (EHR)")
        return SiteConfig(site=doc.site.strip(), modalities=modalities, labels=self.labels(doc.labels, modalities),
                          split=doc.split or SplitConfig(), path=self.path, node=doc.node)

    def dicom(self, key: str, m: DicomFile, site: str) -> DicomModality:
        at, ndim = f"modalities.{key}", len(m.spatial_size)
        overrides: dict[str, Any] = m.pipeline.model_dump(exclude_unset=True, exclude={"augment"}) if m.pipeline \
            else {}
        if m.pipeline is not None and m.pipeline.pixdim is not None and len(m.pipeline.pixdim) != ndim:
            raise self.fail(f"{at}.pipeline.pixdim", f"{list(m.pipeline.pixdim)} must have {ndim} spacings "
                            "(one per spatial_size axis)", f"write pixdim: [{', '.join(['1.0'] * ndim)}] (mm), "
                            "or null to keep native spacing")
        augment = m.pipeline.augment if m.pipeline is not None else None
        if augment is not None:
            overrides["augment"] = augment.model_dump(exclude_unset=True)
            bad = [a for a in augment.flip_axes if not -ndim <= a < ndim]
            if "flip_axes" in augment.model_fields_set and bad:
                raise self.fail(f"{at}.pipeline.augment.flip_axes", f"axis {bad[0]} is not an axis of "
                                f"{ndim}D samples", f"give axes from {-ndim} to {ndim - 1} (-1 is left-right)")
        cache_dir = self.base / os.path.expanduser(m.cache_dir) if m.cache_dir else \
            self.base / ".medsplit_cache" / site / key
        return DicomModality(key=key, source=self.file(m.source, f"{at}.source", folder_ok=True),
                             modality=m.modality, spatial_size=m.spatial_size,
                             pipeline=with_overrides(default_pipeline(m.modality), overrides), cache_dir=cache_dir,
                             duplicates=m.duplicates)

    def table(self, key: str, m: TableFile) -> TableModality:
        at = f"modalities.{key}"
        both = sorted(set(m.numeric) & set(m.categorical))
        if both:
            raise self.fail(f"{at}.categorical", f"{both} also listed under numeric", "list a column once")
        if not m.numeric and not m.categorical:
            raise self.fail(at, "declares no feature columns", "add numeric: [...] and/or categorical: [...]")
        for column, rule in m.missing.columns.items():
            rules = NUMERIC_RULES if column in m.numeric else CATEGORICAL_RULES if column in m.categorical else None
            where = f"{at}.missing.columns.{column}"
            if rules is None:
                raise self.fail(where, f"not a declared feature column"
                                f"{did_you_mean(column, [*m.numeric, *m.categorical])}",
                                "declare it under numeric or categorical first")
            if rule not in rules:
                raise self.fail(where, f"{rule!r} is not one of {', '.join(rules)}{did_you_mean(rule, rules)}",
                                f"use one of: {', '.join(rules)}")
        return TableModality(key=key, source=self.file(m.source, f"{at}.source", folder_ok=False),
                             id_column=m.id_column, numeric=m.numeric, categorical=m.categorical,
                             missing=MissingRules(**m.missing.model_dump()), duplicates=m.duplicates)

    def labels(self, spec: Mapping[str, LabelFile],
               modalities: Mapping[str, DicomModality | TableModality]) -> dict[str, LabelSpec]:
        out: dict[str, LabelSpec] = {}
        tables = [k for k, m in modalities.items() if m.kind == "table"]
        for name, ls in spec.items():
            at = f"labels.{name}"
            classes = self.label_classes(at, ls)
            source = ls.source
            if source is None:
                candidates = tables if len(tables) == 1 else (list(modalities) if len(modalities) == 1 else [])
                if not candidates:
                    raise self.fail(f"{at}.source", "cannot tell which modality's file holds this label",
                                    f"add source: <one of {', '.join(modalities)}>")
                source = candidates[0]
            elif source not in modalities:
                raise self.fail(f"{at}.source", f"{source!r} is not a modality key{did_you_mean(source, modalities)}",
                                f"use one of: {listing(modalities)}")
            m = modalities[source]
            if isinstance(m, TableModality) and (name in m.numeric or name in m.categorical):
                raise self.fail(at, f"the label is also a feature of modalities.{source}",
                                "remove it from numeric/categorical: a feature that is the label leaks the answer")
            if isinstance(m, DicomModality) and m.source.is_dir():
                raise self.fail(f"{at}.source", f"modalities.{source} is a discovered folder and holds no labels",
                                "use a manifest CSV with the label column, or put the label in a table")
            out[name] = LabelSpec(name=name, kind=ls.kind, classes=classes, source=source, values=ls.values,
                                  positive=ls.positive)
        return out

    def label_classes(self, at: str, ls: LabelFile) -> int:
        """The label's number of classes; its mapping keys checked against its kind."""
        if ls.values is not None and ls.positive is not None:
            raise self.fail(at, "sets both values and positive",
                            "keep one: positive: <value> (binary), or values: [...] (class 0 first)")
        if ls.kind == "regression":
            for key in ("classes", "values", "positive"):
                if getattr(ls, key) is not None:
                    raise self.fail(f"{at}.{key}", "is not read for a regression label (its values are numbers)",
                                    f"delete {key}, or write kind: binary or multiclass")
            return 1
        if ls.kind == "binary":
            if ls.classes is not None:
                raise self.fail(f"{at}.classes", "is not read for a binary label (it has 2 classes)",
                                "delete classes, or write kind: multiclass")
            if ls.values is not None and len(ls.values) != 2:
                raise self.fail(f"{at}.values", f"lists {len(ls.values)} values; a binary label has 2",
                                "write values: [<negative>, <positive>], or kind: multiclass")
            return 2
        if ls.positive is not None:
            raise self.fail(f"{at}.positive", "is read for binary labels only",
                            "write values: [...] (class 0 first) for a multiclass label")
        if ls.values is not None:
            if ls.classes is not None and ls.classes != len(ls.values):
                raise self.fail(f"{at}.classes", f"is {ls.classes}, but values lists {len(ls.values)} classes",
                                "delete classes (the values set it), or list every class")
            if len(ls.values) < 2:
                raise self.fail(f"{at}.values", "lists fewer than 2 classes", "list every class, class 0 first")
            return len(ls.values)
        if ls.classes is None:
            raise self.fail(f"{at}.classes", "is required for a multiclass label",
                            "write classes: N (values are 0..N-1), or values: [...] for text classes; sites must "
                            "agree on them")
        return ls.classes
