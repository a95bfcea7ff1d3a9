"""Every real DICOM file shipped with pydicom: it loads into a finite tensor of the configured shape, or is
rejected with a specific reason. Plus the failure classes the corpus does not cover (missing codecs, NaN, ...)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import warnings
from collections import Counter

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless

from data_adapters.dicom import LoadDicomd, check_dicom, classify_exception, read_dicom
from data_adapters.report import REJECT_REASONS
from data_adapters.transforms import build_transforms, default_pipeline

SIZE = (32, 32)
KNOWN = set(REJECT_REASONS) - {"internal_error"}


def _modality(path: str) -> str:
    """The pipeline to use: the file's own modality when we have one for it, else the radiograph default."""
    try:
        mod = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", "")).upper()
    except Exception:  # noqa: BLE001 - unreadable files are classified by the adapter itself
        mod = ""
    return mod if mod in ("CT", "MR", "CR", "DX") else "DX"


@pytest.fixture(scope="module")
def chains():
    # strict_modality off: the corpus mixes modalities and we want every image decoded
    return {m: build_transforms("image", m, SIZE, dataclasses.replace(default_pipeline(m), strict_modality=False))
            for m in ("CT", "MR", "CR", "DX")}


def test_every_pydicom_test_file_loads_or_is_rejected_with_a_reason(chains):
    entries = get_testdata_files()
    assert len(entries) > 150  # the real corpus, files and series folders
    outcomes: Counter[str] = Counter()
    failures = []
    for path in entries:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the deliberately broken files
            try:
                x = chains[_modality(path)]({"image": path})["image"]
            except Exception as e:  # noqa: BLE001 - what we test is how every failure is classified
                r = classify_exception(e, path)
                outcomes[r.reason] += 1
                if r.reason not in KNOWN or not r.detail:
                    failures.append((path, r.reason, r.detail))
                continue
        outcomes["loaded"] += 1
        if not (type(x) is torch.Tensor and x.dtype == torch.float32 and tuple(x.shape) == (1, *SIZE)
                and torch.isfinite(x).all()):
            failures.append((path, "bad tensor", f"{type(x).__name__} {x.dtype} {tuple(x.shape)}"))
    assert not failures, failures
    assert sum(outcomes.values()) == len(entries)
    # the corpus holds each of these on purpose; a regression to a generic reason shows up here
    assert outcomes["loaded"] >= 80, outcomes
    for reason in ("not_an_image", "no_pixel_data", "not_dicom", "corrupt", "unsupported"):
        assert outcomes[reason] >= 1, (reason, outcomes)


@pytest.mark.parametrize("name,syntax", [
    ("SC_rgb_jpeg.dcm", "JPEG Baseline"),
    ("JPGExtended.dcm", "JPEG Extended"),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEG Lossless"),
    ("MR_small_jp2klossless.dcm", "JPEG 2000 Image Compression (Lossless Only)"),
    ("693_J2KI.dcm", "JPEG 2000"),
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS"),
    ("MR_small_RLE.dcm", "RLE"),
])
def test_compressed_transfer_syntaxes_decode_with_installed_plugins(name, syntax, chains):
    path = get_testdata_file(name)
    assert syntax in pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
    x = chains[_modality(path)]({"image": path})["image"]
    assert x.shape == (1, *SIZE) and torch.isfinite(x).all() and x.std() > 0


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_codecs_give_the_uncompressed_pixels(name):
    ref, _ = read_dicom(get_testdata_file("MR_small.dcm"))
    arr, _ = read_dicom(get_testdata_file(name))
    np.testing.assert_array_equal(arr, ref)


def test_missing_codec_names_the_syntax_and_the_package(monkeypatch):
    # simulate a site without pylibjpeg-openjpeg: the JPEG 2000 decoder has no plugin left
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    r = check_dicom(get_testdata_file("MR_small_jp2klossless.dcm"))
    assert r is not None and r.reason == "codec_missing"
    assert "JPEG 2000 Image Compression (Lossless Only)" in r.detail and JPEG2000Lossless in r.detail
    assert "pylibjpeg-openjpeg" in str(r.hint)


def test_transfer_syntax_without_any_decoder_is_codec_missing(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG4HP41  # video: pydicom has no image decoder for it
    path = tmp_path / "mpeg.dcm"
    ds.save_as(path)
    r = check_dicom(path)
    assert r is not None and r.reason == "codec_missing" and "MPEG-4" in r.detail


def test_overflowing_rescale_is_rejected_as_non_finite(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.RescaleSlope = "1e38"  # stored values * 1e38 overflow float32 to inf
    path = tmp_path / "inf.dcm"
    ds.save_as(path)
    r = check_dicom(path)
    assert r is not None and r.reason == "non_finite"


def test_truncated_and_random_files(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    data = open(src, "rb").read()
    (tmp_path / "half.dcm").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert check_dicom(tmp_path / "half.dcm").reason == "corrupt"
    assert check_dicom(tmp_path / "noise.dcm").reason == "not_dicom"
    assert check_dicom(tmp_path / "empty.dcm").reason in ("not_dicom", "corrupt")
    assert check_dicom(tmp_path / "absent.dcm").reason == "missing"


def test_wrong_modality_is_refused_when_strict():
    r = check_dicom(get_testdata_file("MR_small.dcm"), modality="CT")
    assert r is not None and r.reason == "wrong_modality" and "MR" in r.detail
    assert check_dicom(get_testdata_file("MR_small.dcm"), modality="CT", strict_modality=False) is None


def _series_dir():
    return os.path.join(os.path.dirname(get_testdata_file("CT_small.dcm")), "dicomdirtests", "77654033", "CT2")


def test_series_folder_stacks_slices_in_position_order(tmp_path):
    src = _series_dir()
    dst = tmp_path / "series"
    dst.mkdir()
    positions = []
    for i, name in enumerate(sorted(os.listdir(src))):
        ds = pydicom.dcmread(os.path.join(src, name))
        ds.InstanceNumber = 10 - i  # renumbered backwards, as some exports do
        positions.append(float(ds.ImagePositionPatient[2]))
        ds.save_as(dst / f"slice{i}.dcm")
    arr, meta = read_dicom(dst)
    assert arr.shape == (16, 16, 4)
    z = [pydicom.dcmread(dst / f"slice{i}.dcm").ImagePositionPatient[2] for i in range(4)]
    order = np.argsort(z)  # slices come out by position, not by InstanceNumber
    for k, i in enumerate(order):
        ref, _ = read_dicom(dst / f"slice{i}.dcm")
        np.testing.assert_array_equal(arr[..., k], ref)
    x = build_transforms("image", "CT", (4, 16, 16))({"image": str(dst)})["image"]
    assert x.shape == (1, 4, 16, 16) and torch.isfinite(x).all()


def test_series_with_a_corrupt_slice_is_rejected(tmp_path):
    dst = tmp_path / "series"
    shutil.copytree(_series_dir(), dst)
    victim = sorted(dst.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-100])
    r = check_dicom(dst)
    assert r is not None and r.reason == "corrupt" and victim.name in r.detail


def test_folder_mixing_series_is_unsupported(tmp_path):
    dst = tmp_path / "mixed"
    dst.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), dst / "a.dcm")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["other"])
    ds.save_as(dst / "b.dcm")
    r = check_dicom(dst)
    assert r is not None and r.reason == "unsupported" and "2 series" in r.detail


def test_loader_silences_only_the_nvimgcodec_notice(caplog):
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        LoadDicomd("image", "CT")
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not any("NvImgCodec" in m or "nvImageCodec" in m for m in messages)
    assert "an unrelated warning" in messages
    assert not any("nvImageCodec" in r.getMessage() for r in caplog.records)
    assert warnings.filters == before  # no global filter left behind


def test_monochrome1_is_inverted_so_bright_means_dense(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    normal, _ = read_dicom(get_testdata_file("CT_small.dcm"))
    inverted, _ = read_dicom(tmp_path / "mono1.dcm")
    np.testing.assert_allclose(inverted, normal.max() + normal.min() - normal)


def test_series_without_positions_is_stacked_by_instance_number(tmp_path):
    src = _series_dir()
    dst = tmp_path / "series"
    dst.mkdir()
    for i, name in enumerate(sorted(os.listdir(src))):
        ds = pydicom.dcmread(os.path.join(src, name))
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.InstanceNumber = 4 - i
        ds.save_as(dst / f"slice{i}.dcm")
    arr, _ = read_dicom(dst)
    assert arr.shape == (16, 16, 4)
    last, _ = read_dicom(dst / "slice0.dcm")  # InstanceNumber 4 comes last
    np.testing.assert_array_equal(arr[..., 3], last)
