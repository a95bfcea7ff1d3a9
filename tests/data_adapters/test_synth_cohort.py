"""Synthetic cohorts round trip: written as real DICOM + CSV, read back with pydicom, MONAI and open_site_data."""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom
import pytest
import torch
import yaml
from monai.data import PydicomReader
from monai.transforms import LoadImage

from data_adapters import load_site_config, open_site_data
from data_adapters.dicom import quiet_monai_loader
from data_adapters.synth import ehr_feature_dim, synth_cohort
from medsplit.align import align_follower, align_leader
from medsplit.config import load_experiment


def first_dicom(site_dir):
    return sorted((site_dir / "dicom").rglob("*.dcm"))[0]


def test_files_are_valid_dicom_with_realistic_tags(horizontal):
    path = first_dicom(horizontal.out / "site_1")
    assert path.read_bytes()[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
    assert ds.PatientID in horizontal.patients["site_1"] and len(ds.PatientID) == 8
    assert ds.PatientID not in str(path)  # file names carry no patient ID
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID):
        assert pydicom.uid.UID(uid).is_valid
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel) == (32, 32, 16, 1)
    assert len(ds.PixelSpacing) == 2 and float(ds.SliceThickness) > 0 and len(ds.ImagePositionPatient) == 3
    assert float(ds.RescaleIntercept) == -1024.0 and float(ds.RescaleSlope) == 1.0
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() < -900 and -100 < np.median(hu[12:20, 12:20]) < 200  # air around, soft tissue inside


def test_monai_reads_the_files(horizontal):
    path = first_dicom(horizontal.out / "site_2")
    with quiet_monai_loader():
        img = LoadImage(reader=PydicomReader(), image_only=True)(str(path))
    assert tuple(img.shape) == (32, 32) and img.min() < -900
    assert np.allclose(img.meta["spacing"][:2], float(pydicom.dcmread(path).PixelSpacing[0]))


def test_open_site_data_shapes_labels_and_samples(horizontal):
    for name, cfg_path in horizontal.site_configs.items():
        data, report = open_site_data(load_site_config(cfg_path))
        assert report.found == report.loaded == 60 and report.rejected == []
        assert data.shapes == {"image": (1, 32, 32), "ehr": (ehr_feature_dim(),)}
        assert set(data.row_ids) == set(horizontal.patients[name])
        assert len(data.train) + len(data.val) == 30 and len(data.val) > 0
        for label in ("diagnosis", "mortality"):
            assert sum(report.label_balance[label].values()) == 30
            assert set(report.label_balance[label]) <= {"0", "1"}
        s = data.train[0]
        assert set(s) == {"image", "ehr", "diagnosis", "mortality", "row_id"}
        assert s["image"].shape == (1, 32, 32) and s["image"].dtype == torch.float32
        assert s["ehr"].shape == (ehr_feature_dim(),) and s["diagnosis"].dtype == torch.float32
        assert torch.isfinite(s["image"]).all() and torch.isfinite(s["ehr"]).all()
        # the image sample and the EHR sample are the same patient
        assert s["row_id"] in data.prepared["image"].items and s["row_id"] in data.prepared["ehr"].features


def test_sites_are_shifted_and_the_outcome_is_visible(horizontal):
    body_hu, contrast = [], []
    for cfg_path in horizontal.site_configs.values():
        site_dir = cfg_path.parent
        diag = {}
        for line in (site_dir / "ehr.csv").read_text().splitlines()[1:]:
            cells = line.split(",")
            diag[cells[0]] = int(cells[-2])
        vals = {0: [], 1: []}
        centres = []
        for f in sorted((site_dir / "dicom").glob("*.dcm")):  # one file per patient
            ds = pydicom.dcmread(f)
            hu = ds.pixel_array.astype(float) + float(ds.RescaleIntercept)
            centres.append(np.median(hu[14:18, 4:8]))  # soft tissue beside the lungs
            vals[diag[ds.PatientID]].append(np.percentile(hu[8:24, 8:24], 99))
        body_hu.append(np.mean(centres))
        contrast.append(np.mean(vals[1]) - np.mean(vals[0]))
    assert body_hu[0] < body_hu[1] < body_hu[2]  # scanner calibration differs per site
    assert all(c > 20 for c in contrast)  # the lesion makes diagnosed patients brighter at every site


def test_same_seed_same_bytes(tmp_path):
    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}
    a = synth_cohort(tmp_path / "a", sites=2, patients=5, seed=3)
    b = synth_cohort(tmp_path / "b", sites=2, patients=5, seed=3)
    c = synth_cohort(tmp_path / "c", sites=2, patients=5, seed=4)
    assert digest(a.out) == digest(b.out)
    assert digest(a.out) != digest(c.out)


def test_experiment_yaml_ties_the_sites_together(horizontal, vertical):
    h = yaml.safe_load(horizontal.experiment.read_text())
    assert h["topology"] == {"preset": "horizontal"}
    assert [s["name"] for s in h["sites"]] == ["site_1", "site_2", "site_3"]
    assert all((horizontal.out / s["config"]).is_file() for s in h["sites"])
    assert all(s["labels"] == ["diagnosis", "mortality"] for s in h["sites"])
    assert h["sites"][0]["modalities"]["image"] == {"kind": "dicom", "modality": "CT", "shape": [1, 32, 32]}
    v = yaml.safe_load(vertical.experiment.read_text())
    assert v["topology"] == {"preset": "vertical"}
    assert [s["labels"] for s in v["sites"]] == [[], ["diagnosis", "mortality"]]
    assert list(v["sites"][0]["modalities"]) == ["image"] and list(v["sites"][1]["modalities"]) == ["ehr"]
    # only keys something reads: the experiment loader refuses the rest
    assert set(h) == set(v) == {"experiment", "seed", "topology", "sites"}
    exp = load_experiment(vertical.experiment)
    assert [s.party for s in exp.sites] == ["site_1", "site_2"]  # a party is its site's name unless given
    assert [s.party for s in load_experiment(horizontal.experiment).sites] == ["site_1", "site_2", "site_3"]


def test_vertical_sites_align_on_exactly_the_shared_patients(vertical, Wire, run_parallel):
    d1, r1 = open_site_data(load_site_config(vertical.site_configs["site_1"]))
    d2, r2 = open_site_data(load_site_config(vertical.site_configs["site_2"]))
    assert list(d1.shapes) == ["image"] and list(d2.shapes) == ["ehr"]
    assert r1.label_balance == {} and set(r2.label_balance) == {"diagnosis", "mortality"}
    truth = set(vertical.patients["site_1"]) & set(vertical.patients["site_2"])
    assert len(truth) == 32  # 80% of 40
    w = Wire()
    order_labels, order_imaging = run_parallel(lambda: align_leader(d2.row_ids, {"site_1": w.a()}),
                                               lambda: align_follower(d1.row_ids, *w.b()))
    assert order_labels == order_imaging and set(order_labels) == truth
    (t1, v1), (t2, v2) = d1.align(order_imaging), d2.align(order_labels)
    assert t1.row_ids == t2.row_ids and v1.row_ids == v2.row_ids  # same split at both sites
    assert len(t1) + len(v1) == 32
    assert t1[0]["row_id"] == t2[0]["row_id"] and set(t2[0]) == {"ehr", "diagnosis", "mortality", "row_id"}
    assert set(t1[0]) == {"image", "row_id"}


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_3d_series_round_trip(tmp_path, modality):
    res = synth_cohort(tmp_path, sites=1, patients=4, seed=2, slices=4, image_modality=modality)
    series = sorted((tmp_path / "site_1" / "dicom").iterdir())
    assert len(series) == 4 and all(s.is_dir() and len(list(s.iterdir())) == 4 for s in series)
    ds = pydicom.dcmread(sorted(series[0].iterdir())[1])
    assert ds.Modality == modality and ds.InstanceNumber == 2 and float(ds.ImagePositionPatient[2]) == 5.0
    if modality == "MR":
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage and float(ds.MagneticFieldStrength) == 1.5
    data, report = open_site_data(load_site_config(res.site_configs["site_1"]))
    assert report.rejected == [] and data.shapes["image"] == (1, 4, 32, 32)
    x = data.val[0]["image"] if len(data.val) else data.train[0]["image"]
    assert x.shape == (1, 4, 32, 32) and torch.isfinite(x).all()
