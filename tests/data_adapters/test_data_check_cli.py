"""`medsplit data check` and `medsplit synth` as argparse commands: output, JSON, exit codes, help."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from sites.cli import main


def test_check_a_site_config_writes_json_without_patient_ids(horizontal, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "check", "--config", str(horizontal.site_configs["site_1"]), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found 60, loaded 60, rejected 0" in printed and "label diagnosis" in printed
    report = json.loads(out.read_text())
    assert {"found", "loaded", "rejected"} <= set(report) and report["rejected"] == []
    assert report["shapes"] == {"image": [1, 32, 32], "ehr": [11]}
    text = out.read_text() + printed
    assert not [pid for pid in horizontal.patients["site_1"] if pid in text]  # counts only


def test_check_a_bare_folder(horizontal, tmp_path, capsys):
    folder = horizontal.out / "site_2" / "dicom"
    out = tmp_path / "folder.json"
    assert main(["data", "check", str(folder), "--modality", "CT", "--spatial-size", "16", "16",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["loaded"] == 30 and report["shapes"] == {"image": [1, 16, 16]}
    assert not list(folder.rglob(".medsplit_cache"))  # checking a folder writes nothing next to the data


def test_check_folder_with_nothing_loadable_exits_1(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "plan.dcm").write_bytes(open(get_testdata_file("rtplan.dcm"), "rb").read())
    out = tmp_path / "r.json"
    assert main(["data", "check", str(tmp_path), "--modality", "CT", "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["loaded"] == 0 and {r["reason"] for r in report["rejected"]} == {"not_dicom", "not_an_image"}


def test_config_errors_exit_2(horizontal, tmp_path, capsys):
    bad = tmp_path / "site.yaml"
    bad.write_text(horizontal.site_configs["site_1"].read_text().replace("split:", "splitt:"))
    assert main(["data", "check", "--config", str(bad)]) == 2
    assert "did you mean 'split'" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path)]) == 2  # a folder needs --modality
    assert main(["data", "check"]) == 2


def test_data_error_exits_1(horizontal, tmp_path, capsys):
    site = tmp_path / "site"
    shutil.copytree(horizontal.out / "site_3", site, ignore=shutil.ignore_patterns(".medsplit_cache"))
    ehr = pd.read_csv(site / "ehr.csv", dtype=str)
    ehr.loc[0, "crp"] = "high"
    ehr.to_csv(site / "ehr.csv", index=False)
    assert main(["data", "check", "--config", str(site / "site.yaml")]) == 1
    err = capsys.readouterr().err
    assert "'crp'" in err and "not numbers" in err and "line 2" in err


def test_bad_spatial_size_for_a_folder(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path), "--modality", "CT", "--spatial-size", "16"]) == 2
    assert "--spatial-size" in capsys.readouterr().err


def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "c"), "--sites", "2", "--patients", "3", "--seed", "1",
                 "--layout", "vertical"]) == 0
    assert (tmp_path / "c" / "experiment.yaml").is_file() and "site_2" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [(["data", "check", "--help"], "Exit status"),
                                         (["synth", "--help"], "--layout")])
def test_help_texts(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and needle in capsys.readouterr().out
