"""The Privacy section: each cut's latest dCor, the report card and its figures; Compare's privacy chart; small
counts shown as <10."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.privacy import count, label_table, load_card
from sites.cli import main
from tests.dashboard.test_privacy import rendered


@pytest.fixture(scope="module")
def card_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    assert main(["privacy", "--preset", "ushaped", "--epochs", "1", "--patients", "48", "--aux-patients", "48",
                 "--decoder-steps", "20", "--run-dir", str(root / "ushaped-card"), "--quiet"]) == 0
    return root


def test_small_counts_are_suppressed():
    assert [count(n) for n in (0, 1, 9, 10, 250)] == ["0", "<10", "<10", "10", "250"]
    card = {"privacy": {"labels": {"diagnosis": {"shared": False, "attackers": {
        "server via e": {"norm_leak_auc": 0.6, "direction_leak_auc": 0.9, "patients": 12, "positives": 4}}}}}}
    row = label_table(card).iloc[0]
    assert (row["patients"], row["positives"]) == ("12", "<10")


def test_site_report_label_counts_below_ten_are_not_shown(tmp_path):
    run = tmp_path / "run"
    (run / "reports").mkdir(parents=True)
    (run / "reports" / "site_1.json").write_text(json.dumps(
        {"site": "site_1", "found": 47, "loaded": 47, "label_balance": {"diagnosis": {"0": 40, "1": 7}}}))

    def page(folder):
        from pathlib import Path

        from dashboard.views.common import report_tables

        report_tables(Path(folder), {})

    at = AppTest.from_function(page, args=(str(run),))
    at.run()
    text = rendered(at)
    assert "diagnosis: 0 40, 1 <10" in text and "1 7" not in text


@pytest.mark.slow
def test_privacy_page_shows_the_card_and_compare_charts_it(card_root, app_in):
    card = load_card(card_root / "ushaped-card")
    assert card is not None and "hospital.head" in card["privacy"]["cuts"]
    at = app_in(card_root, page="privacy")
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    text = rendered(at)
    assert "hospital.head" in text and "server via server.body->hospital.tail" in text
    assert len(at.get("image")) >= 2  # the reconstruction and the ROC figures
    assert "synthetic patients only" in text
    at.sidebar.radio[0].set_value("Compare").run()
    assert not at.exception
    assert "Privacy against AUC" in [h.value for h in at.subheader]
