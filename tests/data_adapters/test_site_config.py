"""The site YAML: typed, validated, errors that name the file, the key and the fix."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from data_adapters.config import DicomModality, TableModality, load_site_config
from medsplit.errors import ConfigError

EXAMPLE = """\
site: hospital_a
split: {val_fraction: 0.25, seed: 7}
modalities:
  image:
    kind: dicom
    source: images/manifest.csv
    modality: ct
    spatial_size: [64, 64]
    pipeline:
      window: [-160, 240]
      augment: {rotate_degrees: 5, flip_prob: 0.0}
  ehr:
    kind: table
    source: ehr.csv
    id_column: patient_id
    numeric: [age, crp]
    categorical: {sex: [F, M], smoker: null}
    missing: {numeric: mean, columns: {crp: drop}}
labels:
  diagnosis: binary
  grade: {kind: multiclass, classes: 3}
node:
  server: 10.0.0.5:29500   # how this site joins a run (medsplit.config.node)
"""


@pytest.fixture
def site_dir(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "manifest.csv").write_text("patient_id,path\n")
    (tmp_path / "ehr.csv").write_text("patient_id,age\n")
    return tmp_path


def write(site_dir: Path, text: str) -> Path:
    p = site_dir / "site.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_example_parses_into_typed_objects(site_dir, monkeypatch):
    monkeypatch.chdir("/")  # paths are relative to the YAML's folder, not the working directory
    cfg = load_site_config(write(site_dir, EXAMPLE))
    assert cfg.site == "hospital_a" and cfg.split.val_fraction == 0.25 and cfg.split.seed == 7
    img, ehr = cfg.modalities["image"], cfg.modalities["ehr"]
    assert isinstance(img, DicomModality) and isinstance(ehr, TableModality)
    assert img.modality == "CT" and img.spatial_size == (64, 64)
    assert img.source == site_dir / "images" / "manifest.csv"
    assert img.pipeline.window == (-160.0, 240.0) and img.pipeline.augment.rotate_degrees == 5.0
    assert img.pipeline.augment.scale == 0.1  # untouched defaults survive a partial override
    assert img.cache_dir == site_dir / ".medsplit_cache" / "hospital_a" / "image"
    assert ehr.categorical == {"sex": ("F", "M"), "smoker": None}
    assert ehr.missing.numeric == "mean" and ehr.missing.columns == {"crp": "drop"}
    assert cfg.labels["diagnosis"].source == "ehr"  # the only table holds the labels by default
    assert cfg.labels["grade"].kind == "multiclass" and cfg.labels["grade"].classes == 3
    assert cfg.node is not None and cfg.node.server == "10.0.0.5:29500"


def _error(site_dir, text) -> str:
    with pytest.raises(ConfigError) as e:
        load_site_config(write(site_dir, text))
    return str(e.value)


def test_unknown_top_level_key_suggests_the_right_one(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("modalities:", "modalites:"))
    assert str(site_dir / "site.yaml") in msg and "modalites" in msg and "did you mean 'modalities'" in msg


def test_unknown_nested_key_names_its_full_path(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("window:", "windw:"))
    assert "modalities.image.pipeline.windw" in msg and "did you mean 'window'" in msg and "fix:" in msg


def test_bad_modality_value(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("modality: ct", "modality: CTT"))
    assert "modalities.image.modality" in msg and "did you mean 'CT'" in msg


def test_missing_source_file_names_key_and_fix(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("source: ehr.csv", "source: ehr_2024.csv"))
    assert "modalities.ehr.source" in msg and "ehr_2024.csv does not exist" in msg and "relative" in msg


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_site_config("/nonexistent/site.yaml")


def test_key_given_twice_is_refused(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("site: hospital_a", "site: hospital_a\nsite: hospital_b"))
    assert "appears twice" in msg


def test_required_keys_and_types(site_dir):
    assert "spatial_size" in _error(site_dir, EXAMPLE.replace("    spatial_size: [64, 64]\n", ""))
    assert "2 or 3 sizes" in _error(site_dir, EXAMPLE.replace("[64, 64]", "[64]"))
    assert "val_fraction" in _error(site_dir, EXAMPLE.replace("0.25", "1.5"))
    assert "classes" in _error(site_dir, EXAMPLE.replace("{kind: multiclass, classes: 3}", "multiclass"))


def test_label_that_is_also_a_feature_is_refused(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("numeric: [age, crp]", "numeric: [age, crp, diagnosis]"))
    assert "labels.diagnosis" in msg and "leaks" in msg


def test_label_source_must_be_a_modality_key(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("diagnosis: binary", "diagnosis: {kind: binary, source: eh}"))
    assert "labels.diagnosis.source" in msg and "did you mean 'ehr'" in msg


def test_invalid_yaml_names_the_file(site_dir):
    msg = _error(site_dir, "site: [unclosed\n")
    assert "not valid YAML" in msg and "site.yaml" in msg


def test_pixdim_must_match_spatial_rank(site_dir):
    msg = _error(site_dir, EXAMPLE.replace("window: [-160, 240]", "pixdim: [1.0, 1.0, 2.0]"))
    assert "pixdim" in msg and "2 spacings" in msg


def test_absolute_source_path(site_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere") / "ehr.csv"
    other.write_text("patient_id,age\n")
    cfg = load_site_config(write(site_dir, EXAMPLE.replace("source: ehr.csv", f"source: {other}")))
    assert cfg.modalities["ehr"].source == other and os.path.isabs(cfg.modalities["ehr"].source)


# --- the one format, for the site and its node section ---------------------------------------------------

@pytest.fixture
def refused(site_dir, one_format):
    """The error loading ``text`` raises, in the one format, naming the site YAML."""

    def check(text) -> re.Match:
        with pytest.raises(ConfigError) as e:
            load_site_config(write(site_dir, text))
        match = one_format(e.value)
        assert match["file"] == str(site_dir / "site.yaml")
        return match

    return check


@pytest.mark.parametrize("old,new,key,problem", [
    ("[64, 64]", "[64, 0]", "modalities.image.spatial_size[1]", "0 is out of range: it must be >= 1"),
    ("[64, 64]", "[64, 5000]", "modalities.image.spatial_size[1]", "must be <= 4096"),
    ("[64, 64]", "[64, '64']", "modalities.image.spatial_size[1]", "'64' is not an integer"),
    ("0.25", "1.5", "split.val_fraction", "1.5 is out of range: it must be <= 0.9"),
    ("seed: 7", "seed: -1", "split.seed", "must be >= 0"),
    ("rotate_degrees: 5", "rotate_degrees: 500", "modalities.image.pipeline.augment.rotate_degrees", "<= 180"),
    ("flip_prob: 0.0", "flip_prob: 2", "modalities.image.pipeline.augment.flip_prob", "<= 1"),
    ("flip_prob: 0.0", "flip_axes: 5", "modalities.image.pipeline.augment.flip_axes", "axis 5 is not an axis of 2D"),
    ("[-160, 240]", "[240, -160]", "modalities.image.pipeline.window", "lower must be below upper"),
    ("[-160, 240]", "[1, 2, 3]", "modalities.image.pipeline.window", "has 3 items"),
    ("augment:", "strict_modality: 1\n      augment:", "modalities.image.pipeline.strict_modality",
     "1 is not true or false"),
    ("augment:", "resize: letterbx\n      augment:", "modalities.image.pipeline.resize", "did you mean 'letterbox'"),
    ("    kind: table\n", "", "modalities.ehr.kind", "is required"),
    ("kind: table", "kind: tabel", "modalities.ehr.kind", "did you mean 'table'"),
    ("numeric: [age, crp]", "numeric: [age, age]", "modalities.ehr.numeric", "lists age twice"),
    ("columns: {crp: drop}", "columns: {cpr: drop}", "modalities.ehr.missing.columns.cpr", "did you mean 'crp'"),
    ("columns: {crp: drop}", "columns: {crp: most_frequent}", "modalities.ehr.missing.columns.crp",
     "'most_frequent' is not one of mean, median, constant, drop"),
    ("diagnosis: binary", "diagnosis: {kind: binary, classes: 3}", "labels.diagnosis.classes", "binary label"),
    ("{kind: multiclass, classes: 3}", "{kind: multiclass, classes: 1}", "labels.grade.classes", "must be >= 2"),
    ("site: hospital_a", "site: 5", "site", "5 is not text"),
    ("server: 10.0.0.5:29500", "server: 10.0.0.5", "node.server", "'10.0.0.5' is not HOST:PORT"),
    ("server: 10.0.0.5:29500", "sever: 10.0.0.5:29500", "node.sever", "did you mean 'server'"),
    ("server: 10.0.0.5:29500", "secret_env: A\n  secret_file: a.key", "node",
     "secret_env and secret_file are both set"),
    ("server: 10.0.0.5:29500", "experiment: 5", "node.experiment", "5 is not text"),
])
def test_errors_name_file_key_and_fix_in_one_format(refused, old, new, key, problem):
    assert old in EXAMPLE
    m = refused(EXAMPLE.replace(old, new))
    assert m["key"] == key and problem in m["problem"], m.group(0)


def test_a_modality_that_is_not_a_mapping(refused):
    m = refused(EXAMPLE.replace("  ehr:\n    kind: table", "  ehr: table\n  ehr2:\n    kind: table"))
    assert m["key"] == "modalities.ehr" and "expected a mapping of keys, got str" in m["problem"]


def test_missing_keys_say_what_to_add(refused):
    m = refused(EXAMPLE.replace("    id_column: patient_id\n", ""))
    assert (m["key"], m["problem"]) == ("modalities.ehr.id_column", "is required")
    assert m["fix"].startswith("add 'id_column: patient_id'")


def test_the_node_secret_errors_name_the_site_file(site_dir, monkeypatch, one_format):
    monkeypatch.delenv("MEDSPLIT_TEST_NODE_SECRET", raising=False)
    cfg = load_site_config(write(site_dir, EXAMPLE.replace("server: 10.0.0.5:29500",
                                                           "secret_env: MEDSPLIT_TEST_NODE_SECRET")))
    with pytest.raises(ConfigError) as e:
        cfg.node.read_secret(cfg.path)
    m = one_format(e.value)
    assert m["file"] == str(cfg.path) and m["key"] == "node.secret_env" and "is not set" in m["problem"]
    monkeypatch.setenv("MEDSPLIT_TEST_NODE_SECRET", "s3cret")
    assert cfg.node.read_secret(cfg.path) == b"s3cret"
    (site_dir / "node.key").write_text("from-file\n")
    cfg = load_site_config(write(site_dir, EXAMPLE.replace("server: 10.0.0.5:29500", "secret_file: node.key")))
    assert cfg.node.read_secret(cfg.path) == b"from-file"


def test_short_forms_and_empty_sections(site_dir):
    cfg = load_site_config(write(site_dir, EXAMPLE.replace(
        "labels:\n  diagnosis: binary\n  grade: {kind: multiclass, classes: 3}\n", "labels: [diagnosis]\n")
        .replace("categorical: {sex: [F, M], smoker: null}", "categorical: [sex, smoker]")))
    assert cfg.labels["diagnosis"].kind == "binary" and cfg.labels["diagnosis"].classes == 2
    assert cfg.modalities["ehr"].categorical == {"sex": None, "smoker": None}
    cfg = load_site_config(write(site_dir, EXAMPLE.replace(
        "labels:\n  diagnosis: binary\n  grade: {kind: multiclass, classes: 3}\n", "labels:\n")))
    assert cfg.labels == {}


def test_schema_models_cover_every_pipeline_field():
    from dataclasses import fields

    from data_adapters.ehr import MissingRules
    from data_adapters.site_schema import AugmentFile, MissingFile, PipelineFile
    from data_adapters.transforms import AugmentConfig, PipelineConfig

    for model, dataclass_ in ((PipelineFile, PipelineConfig), (AugmentFile, AugmentConfig),
                              (MissingFile, MissingRules)):
        assert set(model.model_fields) == {f.name for f in fields(dataclass_)}, model.__name__
