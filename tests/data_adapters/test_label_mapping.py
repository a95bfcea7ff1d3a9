"""Labels as a study holds them: text classes mapped in the site YAML, multiclass, regression; bad values named."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from data_adapters.config import load_site_config
from data_adapters.site_data import open_site_data
from medsplit.errors import ConfigError, DataError

ROWS = ["00017,50,B,low,3.5", "00018,61,M,high,7.25", "00019,44,B,mid,1.0", "00020,70,M,mid,12"]


def _site(tmp_path, labels: dict, rows=ROWS) -> object:
    (tmp_path / "ehr.csv").write_text("pid,age,dx,grade,los\n" + "\n".join(rows) + "\n")
    cfg = {"site": "h", "split": {"val_fraction": 0.0, "seed": 0},
           "modalities": {"ehr": {"kind": "table", "source": "ehr.csv", "id_column": "pid", "numeric": ["age"]}},
           "labels": labels}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_site_config(path)


def _values(data, name):
    return [data.train[i][name] for i in range(len(data.train))]


@pytest.mark.parametrize("mapping", [{"positive": "M"}, {"values": ["B", "M"]}])
def test_binary_labels_from_text(tmp_path, mapping):
    data, report = open_site_data(_site(tmp_path, {"dx": {"kind": "binary", **mapping}}))
    got = _values(data, "dx")
    assert [float(v) for v in got] == [0.0, 1.0, 0.0, 1.0] and all(v.dtype == torch.float32 for v in got)
    assert report.label_balance["dx"] == {"0": 2, "1": 2}


def test_multiclass_labels_from_a_value_list_are_class_indices(tmp_path):
    cfg = _site(tmp_path, {"grade": {"kind": "multiclass", "values": ["low", "mid", "high"]}})
    assert cfg.labels["grade"].classes == 3  # the list sets the classes
    data, _ = open_site_data(cfg)
    got = _values(data, "grade")
    assert [int(v) for v in got] == [0, 2, 1, 1] and all(v.dtype == torch.int64 for v in got)


def test_regression_labels_are_float32_and_reported_as_a_range(tmp_path):
    data, report = open_site_data(_site(tmp_path, {"los": {"kind": "regression"}}))
    got = _values(data, "los")
    assert [float(v) for v in got] == [3.5, 7.25, 1.0, 12.0] and all(v.dtype == torch.float32 for v in got)
    assert report.label_stats["los"] == {"n": 4, "mean": pytest.approx(5.9375), "min": 1.0, "max": 12.0}
    assert "label los: 4 values" in report.render() and "los" not in report.label_balance


@pytest.mark.parametrize("labels,rows,problem,lines", [
    ({"dx": {"values": ["B", "M"]}}, ["00017,50,b,low,1", "00018,61,M,low,1", "00019,44,X,low,1"],
     r"label column 'dx' in .*ehr.csv has 2 values outside values: \[B, M\] \(2 different; lines 2, 4\)", None),
    ({"dx": {"positive": "M"}}, ["00017,50,B,low,1", "00018,61,M,low,1", "00019,44,benign,low,1"],
     r"label column 'dx' in .*ehr.csv holds 2 different values besides the positive one \(positive: M\), so the "
     r"negative class is ambiguous \(each first seen on lines 2, 4\)", None),
    ({"grade": {"kind": "multiclass", "values": ["low", "mid"]}}, ROWS,
     r"label column 'grade' in .*ehr.csv has 1 values outside values: \[low, mid\] \(1 different; line 3\)", None),
    ({"los": {"kind": "regression"}}, ["00017,50,B,low,3.5", "00018,61,M,low,long"],
     r"label column 'los' in .*ehr.csv has 1 values that are not a finite number \(line 3\)", None),
    ({"dx": {}}, ROWS, r"label column 'dx' in .*ehr.csv has 4 values that are not 0 or 1 \(lines 2, 3, 4, 5\)", None),
])
def test_a_value_outside_the_mapping_names_file_column_and_lines_never_ids(tmp_path, labels, rows, problem, lines):
    with pytest.raises(DataError) as exc:
        open_site_data(_site(tmp_path, labels, rows))
    assert re.search(problem, str(exc.value)), str(exc.value)
    assert "fix:" in str(exc.value)
    assert not re.search(r"0001[789]|00020", str(exc.value)), "a patient ID in an error message"


def test_the_fix_for_unmapped_text_says_how_to_map_it(tmp_path):
    with pytest.raises(DataError, match=r"fix: map the column's values in the site YAML \(labels.dx: \{positive:"):
        open_site_data(_site(tmp_path, {"dx": {"kind": "binary"}}))


def test_positive_alone_with_one_value_at_this_site(tmp_path):
    """A site whose patients are all negative still maps: the positive value need not appear."""
    rows = [r.replace(",M,", ",B,") for r in ROWS]
    data, _ = open_site_data(_site(tmp_path, {"dx": {"positive": "M"}}, rows))
    assert [float(v) for v in _values(data, "dx")] == [0.0] * 4


@pytest.mark.parametrize("label,key,problem", [
    ({"positive": "M", "values": ["B", "M"]}, "labels.dx", "sets both values and positive"),
    ({"values": ["B", "M", "X"]}, "labels.dx.values", "lists 3 values; a binary label has 2"),
    ({"kind": "multiclass", "values": ["a", "b", "c"], "classes": 4}, "labels.dx.classes",
     "is 4, but values lists 3 classes"),
    ({"kind": "multiclass", "positive": "M"}, "labels.dx.positive", "is read for binary labels only"),
    ({"kind": "regression", "values": ["a", "b"]}, "labels.dx.values", "is not read for a regression label"),
    ({"values": ["no", "yes", "no"]}, "labels.dx.values", "lists no twice"),
    ({"values": [False, True]}, "labels.dx.values[0]", "is a YAML boolean"),
    ({"kind": "ordinal"}, "labels.dx.kind", "'ordinal' is not one of binary, multiclass, regression"),
])
def test_a_bad_mapping_is_refused_at_its_key(tmp_path, one_format, label, key, problem):
    with pytest.raises(ConfigError) as exc:
        _site(tmp_path, {"dx": label})
    m = one_format(exc.value)
    assert m["key"] == key and problem in m["problem"], m.group(0)


def test_numbers_in_a_value_list_match_the_table_text(tmp_path):
    rows = [r.replace(",B,", ",1,").replace(",M,", ",2,") for r in ROWS]
    cfg = _site(tmp_path, {"dx": {"values": [1, 2]}}, rows)
    assert cfg.labels["dx"].values == ("1", "2")
    data, _ = open_site_data(cfg)
    assert [float(v) for v in _values(data, "dx")] == [0.0, 1.0, 0.0, 1.0]
