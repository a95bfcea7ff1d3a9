"""Topology: presets, the builder's knobs, the engine's own errors, and experiment YAML saved and loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dashboard.experiments import cli_error, default_experiment
from sites.cli import main
from medsplit.config.experiment import load_experiment, parse_experiment
from medsplit.topology.presets import PRESETS

# The first cut of each preset with the defaults (batch 32): per-step shape and bytes per step.
FIRST_CUT = {"vanilla": ("(32, 16, 8, 8)", "131.1 kB/step"), "ushaped": ("(32, 16, 8, 8)", "131.1 kB/step"),
             "vertical": ("(32, 32)", "4.1 kB/step"), "multitask": ("(32, 32)", "4.1 kB/step"),
             "multihop": ("(32, 16, 8, 8)", "131.1 kB/step"), "horizontal": ("(32, 16, 8, 8)", "131.1 kB/step"),
             "splitfed": ("(32, 16, 8, 8)", "131.1 kB/step")}


def _graph(at) -> str:
    charts = at.get("graphviz_chart")
    assert len(charts) == 1
    return charts[0].proto.spec


def _shown_yaml(at) -> dict:
    return yaml.safe_load(next(c.value for c in at.code if c.language == "yaml"))


def test_every_preset_validates_and_is_drawn_with_its_cuts(app):
    at = app()
    at.run()
    assert not at.exception
    for preset in PRESETS:
        at.selectbox(key="t_preset").set_value(preset).run()
        assert not at.error, (preset, [e.value for e in at.error])
        assert at.success[0].value.startswith("Valid:")
        shape, per_step = FIRST_CUT[preset]
        dot = _graph(at)
        assert shape in dot and per_step in dot, (preset, dot)
        assert _shown_yaml(at)["topology"]["preset"] == preset
    assert "weights (averaged)" in dot  # splitfed, the last preset: averaged at the server


def test_knobs_reach_the_engine(app):
    at = app()
    at.run()
    at.selectbox(key="t_preset").set_value("vertical").run()
    at.selectbox(key="t_merge").set_value("sum").run()
    assert "(32, 32)\\n4.1 kB/step" in _graph(at)  # with sum, the EHR cut is as wide as the image cut
    at.checkbox(key="t_ushaped").check().run()
    labels = at.dataframe[1].value
    assert list(labels["labels leave their site"]) == ["no"] and list(labels["loss at"]) == ["ehr"]
    at.number_input(key="t_batch_size").set_value(8).run()
    assert "(8, 32)" in _graph(at) and "1.0 kB/step" in _graph(at)  # 8 x 32 x 4 bytes
    at.number_input(key="t_nopeek").set_value(0.5).run()
    at.number_input(key="t_epochs").set_value(3).run()
    shown = _shown_yaml(at)
    assert shown["topology"]["nopeek"] == 0.5 and shown["topology"]["merge"] == "sum"
    assert shown["training"] == {"epochs": 3, "batch_size": 8, "lr": 0.001}
    at.selectbox(key="t_preset").set_value("multihop").run()
    at.number_input(key="t_hops").set_value(2).run()
    assert "relay_2 (hop)" in _graph(at)
    assert _shown_yaml(at)["training"]["batch_size"] == 8  # a new preset keeps the training settings


def test_validation_errors_are_the_engines(app):
    at = app()
    at.run()
    at.selectbox(key="t_preset").set_value("vanilla").run()
    at.number_input(key="t_nsites").set_value(2).run()
    assert len(at.error) == 1
    with pytest.raises(Exception) as exc:
        parse_experiment(_shown_yaml(at))
    assert at.error[0].value == cli_error(exc.value)
    assert "sites: preset 'vanilla' takes exactly 1 site, got 2" in at.error[0].value
    assert not at.get("graphviz_chart")

    at.selectbox(key="t_preset").set_value("horizontal").run()
    at.selectbox(key="t_s1_party").set_value("hospital_1").run()
    assert "sites[1].party: 'hospital_1' is also the party of sites[0]" in at.error[0].value

    at.selectbox(key="t_s1_party").set_value("hospital_2").run()
    at.text_input(key="t_channels").set_value("8, sixteen").run()
    assert "topology.channels: '8, sixteen' is not a list" in at.error[0].value


def test_a_bad_file_shows_exactly_what_the_cli_prints(app, tmp_path, capsys):
    bad = default_experiment("vanilla")
    bad["training"]["epoch"] = 3  # a typo the engine names, with the fix
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["run", str(path)]) == 2
    cli = capsys.readouterr().err.strip()
    assert "did you mean 'epochs'" in cli
    at = app()
    at.run()
    at.text_input(key="t_load_path").set_value(str(path))
    at.button(key="b_load").click().run()
    assert [e.value for e in at.error] == [cli]


def test_yaml_is_saved_loaded_and_edited(app, tmp_path):
    cohort = tmp_path / "cohort"
    subprocess.run([sys.executable, "-m", "sites.cli", "synth", "--out", str(cohort), "--sites", "2",
                    "--patients", "20", "--seed", "0", "--layout", "vertical"], check=True, capture_output=True,
                   timeout=120)
    written = yaml.safe_load((cohort / "experiment.yaml").read_text())
    written["server"] = {"port": 29611}  # a key the form does not show
    (cohort / "experiment.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    at = app()
    at.run()
    at.text_input(key="t_load_path").set_value(str(cohort / "experiment.yaml"))
    at.button(key="b_load").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.text_input(key="t_s1_name").value == "site_2"
    assert at.selectbox(key="t_s1_modality").value == "EHR table"
    assert "ehr (11,)" in _graph(at)  # the shapes the cohort declares

    at.number_input(key="t_epochs").set_value(2).run()
    out = tmp_path / "saved.yaml"
    at.text_input(key="t_save_path").set_value(str(out))
    at.button(key="b_save").click().run()
    assert at.success[-1].value == f"saved {out}"
    saved = load_experiment(out)
    assert saved.training.epochs == 2 and [s.name for s in saved.sites] == ["site_1", "site_2"]
    assert saved.server.port == 29611  # keys the form does not show are kept

    text = at.text_area[0].value.replace("epochs: 2", "epochs: 7")
    at.text_area[0].set_value(text)
    at.button(key="b_apply").click().run()
    assert at.number_input(key="t_epochs").value == 7 and not at.error
