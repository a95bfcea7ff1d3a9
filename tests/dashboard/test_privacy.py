"""Aggregates only: no page of a run shows any of its synthetic cohort's patient IDs, and reports are counts."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pyarrow as pa
from streamlit.testing.v1 import AppTest

from dashboard.reports import report_counts


def _text(message) -> list[str]:
    """Every string in a rendered element, with Arrow tables (dataframes, chart data) decoded to CSV."""
    out = []
    for field, value in message.ListFields():
        values = value if field.label == field.LABEL_REPEATED else [value]
        for v in values:
            if field.type == field.TYPE_MESSAGE:
                out += _text(v)
            elif field.type == field.TYPE_BYTES:
                try:
                    out.append(pa.ipc.open_stream(v).read_all().to_pandas().to_csv())
                except pa.ArrowInvalid:
                    out.append(v.decode("latin-1"))
            else:
                out.append(str(v))
    return out


def rendered(at: AppTest) -> str:
    chunks: list[str] = []

    def walk(node) -> None:
        if getattr(node, "proto", None) is not None:
            chunks.extend(_text(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)  # every element the page rendered, sidebar included
    return "\n".join(chunks)


def shown(ids: set[str], text: str) -> set[str]:
    return {i for i in ids if re.search(rf"(?<![0-9A-Za-z]){re.escape(i)}(?![0-9A-Za-z])", text)}


def test_the_check_finds_an_id_in_a_table_or_a_chart():
    def page():
        import pandas as pd
        import streamlit as st

        df = pd.DataFrame({"patient": ["47493971", "95651343"], "value": [1.0, 2.0]})
        st.dataframe(df.iloc[[0]])
        st.line_chart(df.iloc[[1]], x="patient", y="value")

    at = AppTest.from_function(page)
    at.run()
    assert shown({"47493971", "95651343", "11111111"}, rendered(at)) == {"47493971", "95651343"}


def test_no_page_of_a_run_shows_a_patient_id(launched, app_in, tmp_path):
    source = launched["run_dir"]
    ids = set()
    for path in (source / "data").rglob("*.csv"):
        with open(path, newline="") as f:
            ids |= {row["patient_id"] for row in csv.DictReader(f)}
    assert len(ids) >= 40
    run = tmp_path / "runs" / "from-page"  # a copy, with a site report that names a file by patient ID
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("data"))
    leaky = min(ids)
    (run / "reports" / "site_3.json").write_text(json.dumps({
        "site": "site_3", "found": 2, "loaded": 1, "rejected": [
            {"path": f"/data/site_3/{leaky}/img.dcm", "reason": "corrupt", "detail": f"{leaky}: truncated"}]}))

    at = app_in(tmp_path / "runs", page="topology")
    at.run()
    at.text_input(key="t_load_path").set_value(str(run / "experiment.yaml"))
    at.button(key="b_load").click().run()
    pages = {"Topology": rendered(at)}
    for section in ("Launch", "Progress", "Compare"):
        at.sidebar.radio[0].set_value(section).run()
        assert not at.exception and not at.error, (section, at.exception, [e.value for e in at.error])
        pages[section] = rendered(at)
    for section, text in pages.items():
        assert not shown(ids, text), f"{section} shows patient IDs: {sorted(shown(ids, text))[:5]}"
    # what the pages do show: the sites, their counts, the run's metrics
    assert "site_2" in pages["Topology"] and "site_3" in pages["Launch"] and "corrupt 1" in pages["Launch"]
    assert "imaging" in pages["Progress"] and "from-page" in pages["Compare"]


def test_a_site_report_becomes_counts():
    counts = report_counts({"site": "a", "found": 3, "loaded": 2, "splits": {"train": 1, "val": 1},
                            "label_balance": {"diagnosis": {"0": 1, "1": 1}},
                            "rejected": [{"path": "/d/47493971.dcm", "reason": "not_dicom", "detail": "47493971"}]})
    assert counts["rejected by reason"] == {"not_dicom": 1} and counts["rejected"] == 1
    assert "47493971" not in json.dumps(counts)
