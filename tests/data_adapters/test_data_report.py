"""The data report: counts, JSON keys, text, and a redacted form for the dashboard."""

from __future__ import annotations

import json

import pytest

from data_adapters.report import REJECT_REASONS, DataReport, Rejected
from medsplit.errors import ConfigError


def report() -> DataReport:
    r = DataReport(site="h1")
    r.add_modality("image", kind="dicom", found=5, loaded=3, shape=(1, 8, 8), duplicates=1,
                   rejected=[{"path": "/data/MRN123/a.dcm", "reason": "corrupt", "detail": "truncated"},
                             {"path": "/data/MRN124/b.dcm", "reason": "duplicate", "detail": "dup"}])
    r.count_labels("diagnosis", [0, 1, 1.0, 0.0, 1])
    return r


def test_json_has_the_documented_keys():
    d = json.loads(report().to_json())
    assert d["found"] == 5 and d["loaded"] == 3
    assert d["rejected"][0] == {"path": "/data/MRN123/a.dcm", "reason": "corrupt", "detail": "truncated",
                                "key": "image"}
    assert d["shapes"] == {"image": [1, 8, 8]} and d["duplicates"] == {"image": 1}
    assert d["label_balance"] == {"diagnosis": {"0": 2, "1": 3}}
    assert d["rejected_by_reason"] == {"corrupt": 1, "duplicate": 1}


def test_text_rendering():
    text = report().render()
    assert "found 5, loaded 3, rejected 2" in text and "sample shape (1, 8, 8)" in text
    assert "label diagnosis: 0: 2 (40%), 1: 3 (60%)" in text and "corrupt: truncated" in text


def test_redacted_report_drops_paths():
    red = report().redacted().to_json()
    assert "MRN12" not in red and json.loads(red)["rejected"][0]["reason"] == "corrupt"


def test_rejected_reasons_are_a_closed_set():
    assert Rejected("corrupt", "x").reason == "corrupt"
    with pytest.raises(ConfigError, match="reject reason"):
        Rejected("something_else", "x")
    assert "internal_error" in REJECT_REASONS
