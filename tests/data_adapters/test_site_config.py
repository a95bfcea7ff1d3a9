"""The site YAML: typed, validated, errors that name the file, the key and the fix."""

from __future__ import annotations

import os
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
