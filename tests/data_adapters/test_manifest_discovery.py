"""Manifests and folder discovery: which image belongs to which patient."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from pydicom.data import get_testdata_file

from data_adapters.manifest import discover_studies, read_manifest, write_manifest
from medsplit.errors import ConfigError, DataError


def test_manifest_rows_paths_and_labels(tmp_path):
    (tmp_path / "img").mkdir()
    m = tmp_path / "manifest.csv"
    m.write_text("patient_id,study_id,path,diagnosis\n007,S1,img/a.dcm,1\n,S2,img/b.dcm,0\n008,,/abs/c.dcm,\n")
    records, rejected = read_manifest(m, label_columns=["diagnosis"])
    assert [r.patient_id for r in records] == ["007", "008"]
    assert records[0].paths == (str(tmp_path / "img" / "a.dcm"),) and records[0].labels == {"diagnosis": "1"}
    assert records[1].paths == ("/abs/c.dcm",) and records[1].labels == {"diagnosis": None}
    assert records[0].origin == "manifest.csv line 2"
    assert rejected == [{"path": "manifest.csv line 3", "reason": "missing_id", "detail": "no patient_id on this line"}]


def test_manifest_missing_columns_and_empty_file(tmp_path):
    m = tmp_path / "manifest.csv"
    m.write_text("patient,path\n1,a.dcm\n")
    with pytest.raises(ConfigError, match="'patient_id' is missing .*did you mean 'patient'"):
        read_manifest(m)
    m.write_text("patient_id,path\n1,a.dcm\n")
    with pytest.raises(ConfigError, match="label column 'grade'"):
        read_manifest(m, label_columns=["grade"])
    m.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_manifest(m)


def test_discovery_groups_by_study_and_series(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    series = tmp_path / "patientA" / "series1"
    series.mkdir(parents=True)
    for k in range(3):  # one 3-slice series in its own folder
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["s", str(k)])
        ds.ImagePositionPatient = [0, 0, float(k)]
        ds.save_as(series / f"{k}.dcm")
    loose = tmp_path / "patientA" / "scout.dcm"  # a one-file series of the same patient and study
    ds = pydicom.dcmread(src)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["scout"])
    ds.save_as(loose)
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    shutil.copy(get_testdata_file("rtplan.dcm"), tmp_path / "plan.dcm")
    (tmp_path / "readme.txt").write_text("hello")
    records, rejected = discover_studies(tmp_path, modality="CT")
    assert len(records) == 2 and {r.patient_id for r in records} == {ds.PatientID}
    assert records[0].paths == (str(series),)  # the largest series of the patient first
    assert records[1].paths == (str(loose),)
    assert records[0].study_id == records[1].study_id == ds.StudyInstanceUID
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == ["not_an_image", "not_dicom", "wrong_modality"]


def test_write_manifest_round_trip(tmp_path):
    src = tmp_path / "data" / "a.dcm"
    src.parent.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src)
    records, _ = discover_studies(tmp_path / "data")
    write_manifest(records, tmp_path / "m.csv")
    back, rejected = read_manifest(tmp_path / "m.csv")
    assert rejected == [] and [r.paths for r in back] == [r.paths for r in records]
