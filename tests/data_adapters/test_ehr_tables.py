"""EHR tables: encoding, missing-value rules fit on training rows only, and every bad input named clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_adapters.ehr import MissingRules, TableSpec, prepare_table
from data_adapters.labels import LabelSpec
from medsplit.errors import ConfigError, DataError

DIAG = LabelSpec("diagnosis")


def write(tmp_path: Path, text: str, name: str = "ehr.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def spec(path, **kw) -> TableSpec:
    base = dict(path=path, id_column="pid", numeric=("age", "crp"), categorical={"sex": None}, labels=(DIAG,))
    base.update(kw)
    return TableSpec(**base)


GOOD = """pid,age,crp,sex,diagnosis
007,50,1.0,F,0
008,60,,M,1
009,70,3.0,,0
010,80,5.0,M,1
"""


def test_encoding_shape_ids_and_labels(tmp_path):
    t = prepare_table(spec(write(tmp_path, GOOD)))
    # age, crp, sex=F, sex=M, sex=<unseen>
    assert t.feature_names == ["age", "crp", "sex=F", "sex=M", "sex=__unseen__"] and t.dim == 5
    assert t.row_ids == ["007", "008", "009", "010"]  # leading zeros kept: IDs are text
    ds = t.dataset(labels=[DIAG])
    s = ds[1]
    assert s["ehr"].dtype.is_floating_point and s["ehr"].shape == (5,)
    assert s["row_id"] == "008" and s["diagnosis"].item() == 1.0
    x = np.stack([t.features[r] for r in t.row_ids])
    assert np.allclose(x[:, 0].mean(), 0, atol=1e-6) and np.allclose(x[:, 0].std(), 1, atol=1e-6)
    # the missing crp got the median of the observed training values (3.0), then was standardized
    crp = t.stats["numeric"]["crp"]
    assert crp["fill"] == 3.0
    assert np.isclose(t.features["008"][1], (3.0 - crp["mean"]) / crp["std"])
    # the missing sex got the most frequent training category (M)
    assert list(t.features["009"][2:]) == [0.0, 1.0, 0.0]


def test_statistics_come_from_training_rows_only(tmp_path):
    p = write(tmp_path, "pid,age,crp,sex,diagnosis\na,10,1,F,0\nb,20,1,F,1\nc,30,1,F,0\nval1,1000,1,X,1\n")
    t = prepare_table(spec(p), is_train=lambda rid: not rid.startswith("val"))
    assert t.stats["numeric"]["age"]["mean"] == 20.0  # the validation row's 1000 did not leak in
    assert t.stats["categorical"]["sex"]["vocabulary"] == ["F"]
    # a category unseen in training goes to the unseen slot, not to a new column
    assert list(t.features["val1"][2:]) == [0.0, 1.0]


@pytest.mark.parametrize("rule,expected", [("mean", 3.0), ("median", 3.0), ("constant", -1.0)])
def test_numeric_fill_rules(tmp_path, rule, expected):
    p = write(tmp_path, "pid,age,crp,sex,diagnosis\na,1,1,F,0\nb,2,,F,1\nc,3,5,F,0\n")
    t = prepare_table(spec(p, missing=MissingRules(numeric=rule, constant=-1.0)))
    assert t.stats["numeric"]["crp"]["fill"] == expected


def test_drop_rule_sets_rows_aside(tmp_path):
    p = write(tmp_path, "pid,age,crp,sex,diagnosis\na,1,1,F,0\nb,2,,F,1\nc,3,5,F,0\n")
    t = prepare_table(spec(p, missing=MissingRules(columns={"crp": "drop"})))
    assert t.row_ids == ["a", "c"]
    assert [r["reason"] for r in t.rejected] == ["missing_value"] and t.rejected[0]["path"] == "ehr.csv line 3"


def test_constant_category_and_declared_vocabulary(tmp_path):
    p = write(tmp_path, "pid,age,crp,sex,diagnosis\na,1,1,F,0\nb,2,1,,1\nc,3,1,Q,0\n")
    t = prepare_table(spec(p, categorical={"sex": ("F", "M", "unknown")},
                           missing=MissingRules(categorical="constant", category="unknown")))
    assert t.feature_names[2:] == ["sex=F", "sex=M", "sex=unknown", "sex=__unseen__"]
    assert list(t.features["b"][2:]) == [0, 0, 1, 0] and list(t.features["c"][2:]) == [0, 0, 0, 1]


def test_missing_declared_column_is_a_config_error_naming_file_and_column(tmp_path):
    p = write(tmp_path, GOOD.replace("crp", "crp_mg_l"))
    with pytest.raises(ConfigError) as e:
        prepare_table(spec(p))
    msg = str(e.value)
    assert "'crp'" in msg and str(p) in msg and "did you mean 'crp_mg_l'" in msg


def test_strings_in_a_numeric_column_name_file_column_and_lines(tmp_path):
    p = write(tmp_path, GOOD.replace("3.0", "high").replace("5.0", "n/a"))
    with pytest.raises(DataError) as e:
        prepare_table(spec(p))
    msg = str(e.value)
    assert "'crp'" in msg and str(p) in msg and "lines 4, 5" in msg and "high" not in msg


def test_all_empty_column_is_a_clear_error(tmp_path):
    p = write(tmp_path, "pid,age,crp,sex,diagnosis\na,1,,F,0\nb,2,,M,1\n")
    with pytest.raises(DataError, match="'crp'.*empty in every row"):
        prepare_table(spec(p))


def test_column_empty_in_training_rows_is_a_clear_error(tmp_path):
    p = write(tmp_path, "pid,age,crp,sex,diagnosis\na,1,,F,0\nb,2,,M,1\nv,3,4,M,1\n")
    with pytest.raises(DataError, match="no values in the 2 training rows"):
        prepare_table(spec(p), is_train=lambda rid: rid != "v")


def test_duplicate_ids_keep_first_and_are_reported(tmp_path):
    p = write(tmp_path, GOOD + "008,99,9,F,0\n")
    t = prepare_table(spec(p))
    assert t.duplicates == 1 and t.row_ids == ["007", "008", "009", "010"]
    assert t.stats["numeric"]["age"]["mean"] == 65.0  # the duplicate row did not count
    assert t.rejected == [{"path": "ehr.csv line 6", "reason": "duplicate",
                           "detail": "repeats an earlier pid (rule: keep first)"}]


def test_duplicate_ids_rule_error(tmp_path):
    p = write(tmp_path, GOOD + "008,99,9,F,0\n")
    with pytest.raises(DataError, match="1 rows .* repeat a pid") as e:
        prepare_table(spec(p, duplicates="error"))
    assert "008" not in str(e.value)  # the message names lines, never patient IDs


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match="empty"):
        prepare_table(spec(write(tmp_path, "")))
    with pytest.raises(DataError, match="no rows"):
        prepare_table(spec(write(tmp_path, "pid,age,crp,sex,diagnosis\n", "header.csv")))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_table(spec(tmp_path / "nope.csv"))


def test_bad_and_missing_labels(tmp_path):
    with pytest.raises(DataError, match="'diagnosis'.*not 0 or 1"):
        prepare_table(spec(write(tmp_path, GOOD.replace("80,5.0,M,1", "80,5.0,M,2"))))
    t = prepare_table(spec(write(tmp_path, GOOD.replace("80,5.0,M,1", "80,5.0,M,"), "gap.csv")))
    assert "010" not in t.row_ids and t.rejected[0]["reason"] == "missing_label"


def test_multiclass_labels(tmp_path):
    grade = LabelSpec("grade", kind="multiclass", classes=3)
    p = write(tmp_path, "pid,age,crp,sex,grade\na,1,1,F,0\nb,2,1,F,2\nc,3,1,F,1\n")
    t = prepare_table(spec(p, labels=(grade,)))
    s = t.dataset(labels=[grade])[1]
    assert s["grade"].dtype.is_floating_point is False and s["grade"].item() == 2
    with pytest.raises(DataError, match="integer class from 0 to 2"):
        prepare_table(spec(write(tmp_path, "pid,age,crp,sex,grade\na,1,1,F,3\n", "g.csv"), labels=(grade,)))


def test_parquet_with_integer_ids(tmp_path):
    df = pd.DataFrame({"pid": [1, 2, 3], "age": [50.0, None, 70.0], "crp": [1.0, 2.0, 3.0],
                       "sex": ["F", "M", None], "diagnosis": [0, 1, 1]})
    p = tmp_path / "ehr.parquet"
    df.to_parquet(p)
    t = prepare_table(spec(p))
    assert t.row_ids == ["1", "2", "3"] and t.dim == 5
    assert t.stats["numeric"]["age"]["fill"] == 60.0
