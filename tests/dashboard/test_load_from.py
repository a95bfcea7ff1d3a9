"""Loading a data file as an experiment by mistake never shows a line of it: not the YAML error, not the page."""

from __future__ import annotations

import pytest

from dashboard.experiments import from_yaml
from medsplit.config import load_experiment
from medsplit.config.loader import key_path, parse_yaml
from medsplit.errors import ConfigError
from tests.dashboard.test_privacy import rendered

ROW = "48392017,71,F,diagnosis: sepsis"  # a patient's row; the ': ' makes it a YAML error on line 2
CSV = f"patient_id,age,sex,note\n{ROW}\n50211933,64,M,stable\n"
SECRETS = ("48392017", "sepsis", "50211933")


def _clean(text: str) -> None:
    assert not [s for s in SECRETS if s in text], text


def test_yaml_errors_name_the_line_not_its_text(tmp_path):
    path = tmp_path / "ehr.csv"
    path.write_text(CSV)
    for parse in (lambda: parse_yaml(CSV, path), lambda: from_yaml(CSV), lambda: load_experiment(path)):
        with pytest.raises(ConfigError) as err:
            parse()
        _clean(str(err.value))
        assert "line 2" in str(err.value)
    with pytest.raises(ConfigError, match="not experiment keys") as err:  # a line that parses as {row: value}
        from_yaml("48392017,71,F: sepsis\n")
    _clean(str(err.value))
    assert key_path(("sites", 0, "48392017,71,F", "x")) == "sites[0].<a key that is not a config key, not shown>.x"
    assert key_path(("topology", "nopeek")) == "topology.nopeek"


def test_topology_load_from_shows_no_line_of_a_data_file(app_in, tmp_path):
    path = tmp_path / "runs" / "ehr.csv"  # under the dashboard's root: it loads nothing else
    path.parent.mkdir()
    path.write_text(CSV)
    at = app_in(tmp_path / "runs", page="topology")
    at.run()
    at.text_input(key="t_load_path").set_value(str(path))
    at.button(key="b_load").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("not valid YAML" in e and "line 2" in e for e in errors), errors
    _clean(rendered(at))
