"""The imaging dataset: decoded once, cached on disk, bad records set aside and reported."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from pydicom.data import get_testdata_file

from data_adapters import load_site_config, open_site_data
from data_adapters.synth import synth_cohort
from medsplit.errors import DataError


@pytest.fixture
def site(tmp_path):
    res = synth_cohort(tmp_path / "cohort", sites=1, patients=12, seed=1)
    return res.site_configs["site_1"]


def test_epoch_two_reads_the_cache_not_the_dicom(site):
    data, _ = open_site_data(load_site_config(site))
    reader = data.prepared["image"].reader
    assert reader.decode_count == 12  # every file decoded once, while the site data was opened
    cache = data.prepared["image"].cache_dir
    assert len(list(cache.glob("*.pt"))) == 12
    loader = torch.utils.data.DataLoader(data.train, batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    for _epoch in range(2):
        for batch in loader:
            assert batch["image"].shape[1:] == (1, 32, 32) and len(batch["row_id"]) == batch["image"].shape[0]
        for sample in data.val:
            assert sample["image"].shape == (1, 32, 32)
    assert reader.decode_count == 12  # epochs 1 and 2 decoded nothing

    again, _ = open_site_data(load_site_config(site))  # a restart finds the cache on disk
    assert again.prepared["image"].reader.decode_count == 0
    assert torch.equal(again.val[0]["image"], data.val[0]["image"])


def test_a_changed_file_is_decoded_again(site):
    open_site_data(load_site_config(site))
    victim = sorted((site.parent / "dicom").glob("*.dcm"))[3]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    data, _ = open_site_data(load_site_config(site))
    assert data.prepared["image"].reader.decode_count == 1


def test_another_pipeline_gets_its_own_cache(site):
    a, _ = open_site_data(load_site_config(site))
    text = site.read_text().replace("spatial_size: [32, 32]", "spatial_size: [16, 16]")
    site.write_text(text)
    b, _ = open_site_data(load_site_config(site))
    assert b.prepared["image"].reader.decode_count == 12 and b.shapes["image"] == (1, 16, 16)
    assert a.prepared["image"].cache_dir != b.prepared["image"].cache_dir


def test_training_samples_are_augmented_validation_samples_are_not(site):
    data, _ = open_site_data(load_site_config(site))
    eval_view = data.prepared["image"].dataset(data.train.row_ids)
    differs = [not torch.equal(data.train[i]["image"], eval_view[i]["image"]) for i in range(len(data.train))]
    assert any(differs)
    assert all(torch.equal(data.val[i]["image"], data.val[i]["image"]) for i in range(len(data.val)))


def test_bad_records_are_set_aside_and_reported(site):
    site_dir = site.parent
    shutil.copy(get_testdata_file("rtplan.dcm"), site_dir / "dicom" / "plan.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), site_dir / "dicom" / "mr.dcm")
    good = sorted((site_dir / "dicom").glob("img*.dcm"))[0].read_bytes()
    (site_dir / "dicom" / "cut.dcm").write_bytes(good[: len(good) - 300])
    manifest = site_dir / "manifest.csv"
    with open(manifest, "a") as fh:
        fh.write("X1,,dicom/plan.dcm\nX2,,dicom/mr.dcm\nX3,,dicom/cut.dcm\nX4,,dicom/gone.dcm\n,,dicom/x.dcm\n")
        first = manifest.read_text().splitlines()[1].split(",")
        fh.write(f"{first[0]},,{first[2]}\n")  # the same patient twice
    data, report = open_site_data(load_site_config(site))
    reasons = {os.path.basename(r["path"]): r["reason"] for r in report.rejected}
    assert reasons == {"plan.dcm": "not_an_image", "mr.dcm": "wrong_modality", "cut.dcm": "corrupt",
                       "gone.dcm": "missing", "manifest.csv line 18": "missing_id",
                       os.path.basename(first[2]): "duplicate"}
    dup = next(r for r in report.rejected if r["reason"] == "duplicate")
    assert "manifest.csv line 19" in dup["detail"]
    img = report.modalities["image"]
    assert (img["found"], img["loaded"], img["rejected"], img["duplicates"]) == (18, 12, 6, 1)
    assert len(data.train) + len(data.val) == 12  # the site still trains on the good records
    assert all(r["key"] == "image" and r["detail"] for r in report.rejected)


def test_duplicates_rule_error(site):
    manifest = site.parent / "manifest.csv"
    first = manifest.read_text().splitlines()[1]
    with open(manifest, "a") as fh:
        fh.write(first + "\n")
    site.write_text(site.read_text().replace("modality: CT", "modality: CT\n    duplicates: error"))
    with pytest.raises(DataError, match="1 records repeat a patient"):
        open_site_data(load_site_config(site))
