"""`medsplit synth --for EXP.yaml`: files for any experiment's sites, read back exactly as training reads them."""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom
import pytest
import torch
import yaml

from data_adapters.config import load_site_config
from data_adapters.site_data import open_site_data
from data_adapters.synth_study import synth_for_experiment
from medsplit.config import load_experiment
from medsplit.engine.metrics import roc_auc
from medsplit.errors import ConfigError
from sites.cli import main

MIXED = {
    "experiment": "mixed", "topology": {"preset": "vertical", "ushaped": True},
    "tasks": {"dx": {"kind": "binary"}, "grade": {"kind": "multiclass", "classes": 3}, "los": {"kind": "regression"}},
    "sites": [
        {"name": "ct", "modalities": {"image": {"shape": [1, 24, 20], "kind": "dicom", "modality": "CT"},
                                      "labs": {"shape": [3], "kind": "table"}}},
        {"name": "mr", "modalities": {"image": {"shape": [1, 4, 16, 16], "kind": "dicom", "modality": "MR"}}},
        {"name": "xray", "modalities": {"cxr": {"shape": [1, 16, 16], "kind": "dicom", "modality": "DX"}},
         "labels": ["grade"]},
        {"name": "ehr", "modalities": {"ehr": {"shape": [9], "kind": "table"}}, "labels": ["dx", "los"]},
    ]}


def _write(tmp_path, data, name="design.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    return synth_for_experiment(_write(root, MIXED), root / "files", patients=10, seed=3, overlap=0.7)


def test_every_site_reads_back_in_its_declared_shapes_with_its_labels(mixed):
    exp = load_experiment(mixed.experiment)
    assert [s.config for s in exp.sites] == [mixed.out / s / "site.yaml" for s in ("ct", "mr", "xray", "ehr")]
    for site in exp.sites:
        cfg = load_site_config(site.config)
        data, report = open_site_data(cfg)
        assert report.rejected == [] and report.loaded == report.found > 0
        assert {k: tuple(v) for k, v in data.shapes.items()} == {k: tuple(v) for k, v in site.shapes.items()}
        sample = data.val[0] if len(data.val) else data.train[0]
        assert set(sample) == {*site.shapes, *site.labels, "row_id"}
        for key in site.shapes:
            assert sample[key].dtype == torch.float32 and torch.isfinite(sample[key]).all()
    grade = open_site_data(load_site_config(mixed.site_configs["xray"]))[0].train[0]["grade"]
    assert grade.dtype == torch.int64 and 0 <= int(grade) < 3  # a label in a DICOM manifest
    ehr = open_site_data(load_site_config(mixed.site_configs["ehr"]))[0].train[0]
    assert ehr["dx"].dtype == torch.float32 and ehr["los"].dtype == torch.float32


def test_vertical_sites_share_the_chosen_overlap(mixed):
    held = [set(v) for v in mixed.patients.values()]
    assert all(len(h) == 10 for h in held) and len(set.intersection(*held)) == 7


def test_ct_is_read_in_the_soft_tissue_window_and_modalities_are_real_dicom(mixed):
    ct = yaml.safe_load(mixed.site_configs["ct"].read_text())["modalities"]["image"]
    assert ct["pipeline"] == {"window": [-160.0, 240.0]} and ct["spatial_size"] == [24, 20]
    mr_series = sorted((mixed.out / "mr" / "image" / "dicom").iterdir())
    assert len(mr_series) == 10 and all(len(list(s.iterdir())) == 4 for s in mr_series)
    dx = pydicom.dcmread(sorted((mixed.out / "xray" / "cxr" / "dicom").iterdir())[0])
    assert dx.Modality == "DX" and dx.SOPClassUID == pydicom.uid.DigitalXRayImageStorageForPresentation
    assert "ImagePositionPatient" not in dx  # a projection radiograph


def test_same_seed_same_bytes(tmp_path):
    design = {**MIXED, "sites": MIXED["sites"][3:]}
    design["tasks"] = {"dx": {}, "los": {"kind": "regression"}}
    design["topology"] = {"preset": "vanilla"}

    def digest(seed, name):
        res = synth_for_experiment(_write(tmp_path, design), tmp_path / name, patients=8, seed=seed)
        return {p.relative_to(res.out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(res.out.rglob("*")) if p.is_file()}

    assert digest(1, "a") == digest(1, "b") != digest(2, "c")


def test_horizontal_sites_hold_their_own_patients_and_the_same_columns(tmp_path):
    design = {"experiment": "h", "topology": {"preset": "splitfed"},
              "sites": [{"name": f"h{i}", "modalities": {"ehr": {"shape": [12], "kind": "table"}},
                         "labels": ["diagnosis"]} for i in range(3)]}
    res = synth_for_experiment(_write(tmp_path, design), tmp_path / "out", patients=20, seed=0)
    held = [set(v) for v in res.patients.values()]
    assert sum(len(h) for h in held) == len(set.union(*held)) == 60
    headers = {(res.out / s / "ehr.csv").read_text().splitlines()[0] for s in res.patients}
    assert len(headers) == 1


def test_one_latent_outcome_drives_tables_and_labels_so_a_study_can_learn(tmp_path):
    """Two vertical table sites: a linear model on their joined columns separates the label well."""
    design = {"experiment": "v", "topology": {"preset": "vertical"},
              "sites": [{"name": "a", "modalities": {"ehr": {"shape": [15]}}, "labels": ["outcome"]},
                        {"name": "b", "modalities": {"ehr": {"shape": [22]}}}]}
    res = synth_for_experiment(_write(tmp_path, design), tmp_path / "out", patients=400, seed=0, overlap=1.0)
    a, b = (open_site_data(load_site_config(res.site_configs[s]))[0] for s in ("a", "b"))
    ids = a.row_ids
    x = np.stack([np.concatenate([a.prepared["ehr"].features[i], b.prepared["ehr"].features[i]]) for i in ids])
    y = np.array([a.label_values["outcome"][i] for i in ids])
    x1 = np.c_[x, np.ones(len(x))]
    fit, test = slice(0, 300), slice(300, None)
    w = np.linalg.lstsq(x1[fit], y[fit], rcond=None)[0]
    assert roc_auc(y[test], x1[test] @ w) > 0.8
    # each site holds only part of the signal: the joined columns beat either site's alone
    alone = [roc_auc(y[test], np.c_[x[:, s], np.ones(len(x))][test] @ np.linalg.lstsq(
        np.c_[x[:, s], np.ones(len(x))][fit], y[fit], rcond=None)[0]) for s in (slice(0, 15), slice(15, None))]
    assert roc_auc(y[test], x1[test] @ w) > max(alone)


TEMPLATE = {"site": "hosp", "modalities": {"ehr": {
    "kind": "table", "source": "not/written/yet.csv", "id_column": "mrn", "numeric": ["age", "crp", "wbc"],
    "categorical": {"ward": ["a", "b"]}}},
    "labels": {"outcome": {"kind": "binary", "values": ["stable", "deteriorated"], "source": "ehr"}}}


def test_a_site_yaml_of_the_study_sets_columns_and_label_text(tmp_path):
    _write(tmp_path, TEMPLATE, "hosp.yaml")
    design = {"experiment": "t", "sites": [{"name": "hosp", "config": "hosp.yaml",
                                            "modalities": {"ehr": {"shape": [6]}}, "labels": ["outcome"]}]}
    res = synth_for_experiment(_write(tmp_path, design), tmp_path / "out", patients=30, seed=0)
    header, *rows = (res.out / "hosp" / "ehr.csv").read_text().splitlines()
    assert header == "mrn,age,crp,wbc,ward,outcome"
    assert {r.split(",")[-1] for r in rows} == {"stable", "deteriorated"}
    written = load_site_config(res.site_configs["hosp"])
    assert written.labels["outcome"].values == ("stable", "deteriorated")
    data, report = open_site_data(written)
    assert set(report.label_balance["outcome"]) == {"0", "1"}


def test_a_site_yaml_that_disagrees_with_the_experiment_is_refused(tmp_path, one_format):
    _write(tmp_path, TEMPLATE, "hosp.yaml")
    design = {"experiment": "t", "sites": [{"name": "hosp", "config": "hosp.yaml",
                                            "modalities": {"ehr": {"shape": [7]}}, "labels": ["outcome"]}]}
    with pytest.raises(ConfigError) as exc:
        synth_for_experiment(_write(tmp_path, design), tmp_path / "out")
    m = one_format(exc.value)
    assert m["key"] == "sites[0].modalities.ehr.shape" and "hosp.yaml's modalities.ehr encodes to [6]" in m["problem"]


def test_synth_for_on_the_command_line(tmp_path, capsys):
    design = _write(tmp_path, {"experiment": "c", "sites": [{"name": "s", "modalities": {"x": {"shape": [5]}},
                                                            "labels": ["y"]}]})
    assert main(["synth", "--for", str(design), "--out", str(tmp_path / "o"), "--patients", "5"]) == 0
    assert "wrote 1 sites for experiment" in capsys.readouterr().out
    assert load_experiment(tmp_path / "o" / "experiment.yaml").sites[0].config == tmp_path / "o" / "s" / "site.yaml"
    assert main(["synth", "--for", str(design), "--out", str(tmp_path / "p"), "--sites", "2"]) == 2
    assert "--sites: the experiment says what each site holds when --for is given" in capsys.readouterr().err
