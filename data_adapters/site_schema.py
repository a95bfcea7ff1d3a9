"""What a site YAML may say, key by key, with bounds: the models ``config.py`` validates a file against."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from medsplit.config.loader import StrictModel, one_of, problem
from medsplit.config.node import NodeConfig

from .dicom import DICOM_MODALITIES
from .ehr import CATEGORICAL_RULES, NUMERIC_RULES, MissingRules
from .labels import LABEL_KINDS
from .transforms import RESIZE_MODES, AugmentConfig

__all__ = ["SplitConfig", "SiteFile", "DicomFile", "TableFile", "LabelFile", "PipelineFile", "AugmentFile",
           "MissingFile"]

_AUGMENT, _MISSING = AugmentConfig(), MissingRules()
Text = Annotated[StrictStr, Field(min_length=1)]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
Fraction = Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Duplicates = Annotated[StrictStr, AfterValidator(one_of(("first", "error")))]


def _name(value: Any) -> Any:
    """A column named by a number in YAML (2020:) is still a column name."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise problem(f"lists {', '.join(twice)} twice", "list each column once")
    return names


Column = Annotated[StrictStr, BeforeValidator(_name), Field(min_length=1)]
Columns = Annotated[tuple[Column, ...], Field(examples=[["age", "crp"]])]


def _pair(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and value[0] >= value[1]:
        raise problem(f"{list(value)}: lower must be below upper", "write [lower, upper]")
    return value


class SplitConfig(StrictModel):
    """Patients go to validation by a seeded hash of their ID: sites with the same seed agree."""

    val_fraction: Annotated[StrictFloat, Field(ge=0.0, le=0.9, allow_inf_nan=False)] = 0.2
    seed: Annotated[StrictInt, Field(ge=0)] = 0


class AugmentFile(StrictModel):
    """Overrides of the modality's augmentation; what the file does not set keeps the default."""

    enabled: StrictBool = _AUGMENT.enabled
    flip_prob: Fraction = _AUGMENT.flip_prob
    flip_axes: Annotated[tuple[StrictInt, ...], BeforeValidator(lambda v: [v] if isinstance(v, int) else v)] = \
        _AUGMENT.flip_axes
    affine_prob: Fraction = _AUGMENT.affine_prob
    rotate_degrees: Annotated[StrictFloat, Field(ge=0.0, le=180.0, allow_inf_nan=False)] = _AUGMENT.rotate_degrees
    scale: Fraction = _AUGMENT.scale
    translate: Fraction = _AUGMENT.translate
    noise_std: Fraction = _AUGMENT.noise_std


class PipelineFile(StrictModel):
    """Overrides of the modality's default pipeline (``transforms.default_pipeline``)."""

    orientation: StrictStr | None = None
    pixdim: tuple[Annotated[StrictFloat, Field(ge=1e-3, allow_inf_nan=False)], ...] | None = None
    window: Annotated[tuple[Finite, Finite] | None, Field(examples=[[-160, 240]])] = None
    percentiles: Annotated[tuple[Finite, Finite] | None, Field(examples=[[0.5, 99.5]])] = None
    resize: Annotated[StrictStr, AfterValidator(one_of(RESIZE_MODES))] = "letterbox"
    strict_modality: StrictBool = True
    augment: AugmentFile | None = None

    _window = field_validator("window", "percentiles")(_pair)

    @field_validator("orientation")
    @classmethod
    def _axis_code(cls, code: str | None) -> str | None:
        if code is not None and sorted(code.upper().replace("L", "R").replace("P", "A").replace("I", "S")) != \
                ["A", "R", "S"]:
            raise problem(f"{code!r} is not an axis code such as RAS or LPS",
                          "write orientation: RAS, or null to keep the file's orientation")
        return code.upper() if code else None


def _sizes(size: tuple[int, ...]) -> tuple[int, ...]:
    if len(size) not in (2, 3):
        raise problem(f"{list(size)} is not 2 or 3 sizes", "write [H, W] for 2D models or [D, H, W] for 3D models")
    return size


class DicomFile(StrictModel):
    kind: Literal["dicom"]
    source: Text = Field(description="a manifest CSV or a folder of DICOM files, relative to this YAML")
    modality: Annotated[StrictStr, AfterValidator(one_of(DICOM_MODALITIES, upper=True)), Field(
        examples=["CT"], description=f"one of {', '.join(DICOM_MODALITIES)}")]
    spatial_size: Annotated[tuple[Annotated[StrictInt, Field(ge=1, le=4096)], ...], Field(
        examples=[[64, 64]], description="[H, W] or [D, H, W], the model's input size")]
    pipeline: PipelineFile | None = None
    cache_dir: Text | None = None
    duplicates: Duplicates = "first"

    _spatial = field_validator("spatial_size")(_sizes)


class MissingFile(StrictModel):
    numeric: Annotated[StrictStr, AfterValidator(one_of(NUMERIC_RULES))] = _MISSING.numeric
    categorical: Annotated[StrictStr, AfterValidator(one_of(CATEGORICAL_RULES))] = _MISSING.categorical
    constant: Finite = _MISSING.constant
    category: Text = _MISSING.category
    columns: dict[Column, StrictStr] = {}


class TableFile(StrictModel):
    kind: Literal["table"]
    source: Text = Field(description="a CSV or Parquet file, relative to this YAML")
    id_column: Column = Field(examples=["patient_id"], description="the column that holds the patient ID")
    numeric: Columns = ()
    categorical: Annotated[dict[Column, Columns | None], BeforeValidator(
        lambda v: {c: None for c in v} if isinstance(v, list) else v), Field(examples=[{"sex": ["F", "M"]}])] = {}
    missing: Annotated[MissingFile, BeforeValidator(lambda v: {} if v is None else v)] = MissingFile()
    duplicates: Duplicates = "first"

    _numeric = field_validator("numeric")(_unique)

    @field_validator("categorical")
    @classmethod
    def _vocabularies(cls, categorical: dict[str, tuple[str, ...] | None]) -> dict[str, tuple[str, ...] | None]:
        for vocabulary in categorical.values():
            if vocabulary is not None:
                _unique(vocabulary)
        return categorical


def _label_value(value: Any) -> Any:
    """A class as the table writes it: numbers in YAML (values: [0, 1]) are text; YAML's yes/no are refused."""
    if isinstance(value, bool):
        raise problem(f"{value} is a YAML boolean (yes/no/true/false are read as booleans)",
                      "quote the value as it is written in the table, e.g. 'yes'")
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


LabelValue = Annotated[StrictStr, BeforeValidator(_label_value), Field(min_length=1)]


class LabelFile(StrictModel):
    """A label column: its kind, and for text columns how values map to classes."""

    kind: Annotated[StrictStr, AfterValidator(one_of(LABEL_KINDS))] = "binary"
    classes: Annotated[StrictInt, Field(ge=2, le=100000)] | None = None
    source: Text | None = None
    values: Annotated[tuple[LabelValue, ...] | None, Field(
        examples=[["B", "M"]], description="the classes as written in the table, class 0 first (binary: "
                                           "[negative, positive])")] = None
    positive: Annotated[LabelValue | None, Field(
        examples=["M"], description="binary: the value that means positive; the one other value is negative")] = None

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        twice = sorted({v for v in values if values.count(v) > 1}) if values else []
        if twice:
            raise problem(f"lists {', '.join(twice)} twice", "list each class once")
        return values


def _labels(value: Any) -> Any:
    """labels: [a, b] and labels: {a: binary} are short for {a: {kind: binary}}."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {_name(n): {} for n in value}
    if isinstance(value, dict):
        return {k: {"kind": v} if isinstance(v, str) else {} if v is None else v for k, v in value.items()}
    return value


class SiteFile(StrictModel):
    """The whole file; ``modalities`` are checked per kind (DicomFile or TableFile) once the kind is known."""

    site: Text = Field(examples=["hospital_a"], description="the name of this hospital")
    modalities: Annotated[dict[StrictStr, Any], Field(min_length=1, examples=[
        {"image": {"kind": "dicom", "source": "manifest.csv", "modality": "CT", "spatial_size": [64, 64]}}])]
    labels: Annotated[dict[Column, LabelFile], BeforeValidator(_labels)] = {}
    split: SplitConfig | None = None
    node: NodeConfig | None = None
