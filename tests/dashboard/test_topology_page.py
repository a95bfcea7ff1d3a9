"""Topology: presets and knobs, the engine's own verdict pinned to the field (nothing corrected, the graph still
drawn), sites of any data mix with an encoder each, designs stored and shared, paths confined to the root."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dashboard.designs import Designs
from dashboard.experiments import cli_error, default_experiment
from medsplit.config.experiment import load_experiment
from medsplit.topology.presets import KNOBS, PRESETS
from sites.cli import main
from tests.dashboard.helpers import FAULT, graph, pinned, shown_yaml, widget_keys

# The first cut of each preset with the defaults (batch 32): per-step shape and bytes per step.
FIRST_CUT = {"vanilla": ("(32, 16, 8, 8)", "131.1 kB/step"), "ushaped": ("(32, 16, 8, 8)", "131.1 kB/step"),
             "vertical": ("(32, 32)", "4.1 kB/step"), "multitask": ("(32, 32)", "4.1 kB/step"),
             "multihop": ("(32, 16, 8, 8)", "131.1 kB/step"), "horizontal": ("(32, 16, 8, 8)", "131.1 kB/step"),
             "splitfed": ("(32, 16, 8, 8)", "131.1 kB/step")}


@pytest.fixture
def page(app_in, tmp_path):
    """The Topology section on a fresh runs folder (its own stored designs)."""
    at = app_in(tmp_path / "runs", page="topology")
    at.run()
    assert not at.exception
    return at


def test_every_preset_validates_and_is_drawn_with_its_cuts_and_a_legend(page):
    for preset in PRESETS:
        page.selectbox(key="t_preset").set_value(preset).run()
        assert not page.error, (preset, [e.value for e in page.error])
        assert page.success[0].value.startswith("Valid:")
        shape, per_step = FIRST_CUT[preset]
        dot = graph(page)
        assert shape in dot and per_step in dot, (preset, dot)
        assert "<b>edges</b>" in dot and "client weights" in dot  # the legend of edge styles
        assert shown_yaml(page)["topology"]["preset"] == preset
    # splitfed, the last: weights are dotted edges the legend explains, with no label over a party's title
    assert "style=dotted" in dot and "xlabel" not in dot and 'tooltip="weights (averaged)"' in dot


def test_knobs_reach_the_engine_and_only_the_presets_own_are_shown(page):
    page.selectbox(key="t_preset").set_value("vertical").run()
    shown = widget_keys(page)
    assert {f"t_{k}" for k in PRESETS["vertical"].knobs} <= shown
    assert not {f"t_{k}" for k in set(KNOBS) - set(PRESETS["vertical"].knobs)} & shown  # no hops, no servers
    assert set(shown_yaml(page)["topology"]) == {"preset", *PRESETS["vertical"].knobs}
    page.selectbox(key="t_merge").set_value("sum").run()
    assert "(32, 32)\\n4.1 kB/step" in graph(page)  # with sum, the EHR cut is as wide as the image cut
    page.checkbox(key="t_ushaped").check().run()
    labels = page.dataframe[1].value
    assert list(labels["labels leave their site"]) == ["no"] and list(labels["loss at"]) == ["ehr"]
    page.text_input(key="t_batch_size").set_value("8").run()
    assert "(8, 32)" in graph(page) and "1.0 kB/step" in graph(page)  # 8 x 32 x 4 bytes
    page.text_input(key="t_nopeek").set_value("0.5").run()
    page.text_input(key="t_epochs").set_value("3").run()
    yml = shown_yaml(page)
    assert yml["topology"]["nopeek"] == 0.5 and yml["topology"]["merge"] == "sum"
    assert yml["training"] == {"epochs": 3, "batch_size": 8, "lr": 0.001}
    page.selectbox(key="t_preset").set_value("multihop").run()
    assert "t_hops" in widget_keys(page) and "t_merge" not in widget_keys(page)
    page.text_input(key="t_hops").set_value("2").run()
    assert "relay_2 (hop)" in graph(page)
    assert shown_yaml(page)["training"]["batch_size"] == 8  # a new preset keeps the training settings


def _vertical(**change) -> dict:
    data = default_experiment("vertical")
    for path, value in change.items():
        node = data
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[keys[-1]] = value
    return data


# (a design medsplit run refuses, the key it leaves in place, the widget the error is pinned to)
REFUSED = {
    "misspelt preset": (_vertical(**{"topology.preset": "verticle"}), ("topology", "preset"), "verticle", "t_preset"),
    "zero epochs": (_vertical(**{"training.epochs": 0}), ("training", "epochs"), 0, "t_epochs"),
    "negative lr": (_vertical(**{"training.lr": -1}), ("training", "lr"), -1, "t_lr"),
    "negative batch": (_vertical(**{"training.batch_size": -5}), ("training", "batch_size"), -5, "t_batch_size"),
    "zero hops": ({**default_experiment("multihop"), "topology": {"preset": "multihop", "hops": 0}},
                  ("topology", "hops"), 0, "t_hops"),
    "2-D image": (_vertical(**{"sites.0.modalities.image.shape": [32, 32]}), None, None, "t_s0_m0_shape"),
    "zero dimension": (_vertical(**{"sites.0.modalities.image.shape": [1, 0, 32]}), None, None, "t_s0_m0_shape"),
    "not a number": (_vertical(**{"sites.0.modalities.image.shape": [1, "big", 32]}), None, None, "t_s0_m0_shape"),
    "two sites, one party": (_vertical(**{"sites.1.party": "imaging"}), ("sites", 1, "party"), "imaging",
                             "t_s1_party"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_page_refuses_what_medsplit_run_refuses_at_the_field(case, app_in, tmp_path, capsys):
    data, where, kept, widget = REFUSED[case]
    root = tmp_path / "runs"
    root.mkdir()
    path = root / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(path)]) == 2
    cli = capsys.readouterr().err.strip()
    at = app_in(root, page="topology")
    at.run()
    at.text_input(key="t_load_path").set_value("bad.yaml")
    at.button(key="b_load").click().run()
    assert not at.exception, at.exception
    assert cli in [e.value for e in at.error]  # the words of `medsplit run`, file and key included
    assert not [s for s in at.success if s.value.startswith("Valid")]  # never "Valid"
    assert any(cli.removeprefix("medsplit run: error: ") == e for e in pinned(at, widget)), (widget, cli)
    if where:
        node = shown_yaml(at)
        for k in where:
            node = node[k]
        assert node == kept  # shown as written: nothing corrected
    dot = graph(at)  # the graph stays, the faulty element in red
    assert FAULT in dot and "not compiled" in dot


def test_a_bad_value_typed_is_kept_refused_at_its_field_and_marked_in_the_graph(page):
    page.text_input(key="t_epochs").set_value("0").run()
    assert shown_yaml(page)["training"]["epochs"] == 0 and not page.success
    assert pinned(page, "t_epochs") == ["training.epochs: 0 is out of range: it must be >= 1\n  fix: give a value >= 1"]
    assert page.error[-1].value.startswith("medsplit run: error: training.epochs")
    page.text_input(key="t_epochs").set_value("2").run()
    assert page.success and not page.error

    page.text_input(key="t_s0_m0_shape").set_value("1, big, 32").run()
    assert shown_yaml(page)["sites"][0]["modalities"]["image"]["shape"] == [1, "big", 32]
    assert pinned(page, "t_s0_m0_shape")[0].startswith("sites[0].modalities.image.shape[1]: 'big' is not an integer")
    dot = graph(page)
    line = next(x for x in dot.splitlines() if '"s0:image"' in x and "[label=" in x)
    assert FAULT in line and "big" in line  # the faulty data key is the red one
    assert FAULT not in next(x for x in dot.splitlines() if '"s1:ehr"' in x and "[label=" in x)


def test_a_huge_batch_is_flagged_not_valid(page):
    page.text_input(key="t_batch_size").set_value("100000").run()
    assert not page.success and not page.error
    assert "flagged" in page.warning[0].value and "100000" in page.warning[0].value
    assert shown_yaml(page)["training"]["batch_size"] == 100000


def test_sites_hold_any_data_mix_with_an_encoder_for_each(page):
    page.selectbox(key="t_preset").set_value("vertical").run()
    page.button(key="b_add_data_0").click().run()  # the imaging site also holds a table
    assert set(shown_yaml(page)["sites"][0]["modalities"]) == {"image", "ehr"}
    page.text_input(key="t_s0_m1_key").set_value("labs").run()
    page.text_input(key="t_s0_m1_shape").set_value("15").run()
    page.selectbox(key="t_s0_m0_enc").set_value("resnet").run()
    page.selectbox(key="t_s1_m0_kind").set_value("table").run()
    page.button(key="b_add_site").click().run()  # a third site: MR images only
    page.text_input(key="t_s2_m0_key").set_value("image").run()
    page.selectbox(key="t_s2_m0_kind").set_value("MR").run()
    page.text_input(key="t_s2_m0_shape").set_value("1, 24, 24").run()
    page.selectbox(key="t_s2_m0_enc").set_value("module").run()
    page.text_input(key="t_s2_m0_module").set_value("tests.dashboard.pace:encoder").run()
    assert not page.error, [e.value for e in page.error]
    sites = shown_yaml(page)["sites"]
    assert sites[0]["modalities"]["image"]["encoder"] == {"kind": "resnet"}
    assert sites[0]["modalities"]["labs"] == {"kind": "table", "shape": [15]}
    assert sites[2]["modalities"]["image"] == {"kind": "dicom", "modality": "MR", "shape": [1, 24, 24],
                                               "encoder": {"kind": "module", "module": "tests.dashboard.pace:encoder"}}
    dot = graph(page)
    assert "labs (15,)" in dot and "site_3 (site)" in dot and "image (1, 24, 24)" in dot
    page.button(key="b_rm_data_0_1").click().run()
    assert set(shown_yaml(page)["sites"][0]["modalities"]) == {"image"}


def test_designs_are_stored_survive_a_reload_and_are_shared_between_tabs(app_in, tmp_path):
    root = tmp_path / "runs"
    one = app_in(root, page="topology")
    one.run()
    one.text_input(key="t_epochs").set_value("7").run()
    name = one.selectbox(key="t_design").value
    assert Designs(root).read(name).data["training"]["epochs"] == 7  # stored under the runs folder

    two = app_in(root, page="topology")  # a second tab, or the first one reloaded
    two.run()
    assert two.selectbox(key="t_design").value == name and two.text_input(key="t_epochs").value == "7"
    two.text_input(key="t_lr").set_value("0.01").run()
    one.text_input(key="t_seed").set_value("4").run()  # the first tab's next edit keeps the second tab's
    training = shown_yaml(one)["training"]
    assert training["lr"] == 0.01 and training["epochs"] == 7 and shown_yaml(one)["seed"] == 4
    assert one.text_input(key="t_lr").value == "0.01"

    one.button(key="b_new_design").click().run()
    other = one.selectbox(key="t_design").value
    assert other != name and sorted(Designs(root).names()) == sorted([name, other])
    linked = app_in(root, page="topology", design=name)  # a deep link opens that design
    linked.run()
    assert linked.text_input(key="t_epochs").value == "7"


def test_yaml_is_saved_loaded_and_edited(page, tmp_path):
    cohort = tmp_path / "runs" / "cohort"
    subprocess.run([sys.executable, "-m", "sites.cli", "synth", "--out", str(cohort), "--sites", "2",
                    "--patients", "20", "--seed", "0", "--layout", "vertical"], check=True, capture_output=True,
                   timeout=120)
    written = yaml.safe_load((cohort / "experiment.yaml").read_text())
    written["server"] = {"port": 29611}  # a key the form does not show
    (cohort / "experiment.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    page.text_input(key="t_load_path").set_value(str(cohort / "experiment.yaml"))
    page.button(key="b_load").click().run()
    assert not page.error, [e.value for e in page.error]
    assert page.text_input(key="t_s1_name").value == "site_2"
    assert page.selectbox(key="t_s1_m0_kind").value == "table"
    assert "ehr (11,)" in graph(page)  # the shapes the cohort declares

    page.text_input(key="t_epochs").set_value("2").run()
    assert page.text_input(key="t_save_path").value == "synth-vertical-2x20-seed0.yaml"
    page.text_input(key="t_name").set_value("renamed").run()
    assert page.text_input(key="t_save_path").value == "renamed.yaml"  # follows the experiment's name
    page.button(key="b_save").click().run()
    assert page.success[-1].value == "saved renamed.yaml"
    saved = load_experiment(tmp_path / "runs" / "renamed.yaml")
    assert saved.training.epochs == 2 and [s.name for s in saved.sites] == ["site_1", "site_2"]
    assert saved.server.port == 29611  # keys the form does not show are kept

    text = page.text_area[0].value.replace("epochs: 2", "epochs: 7")
    page.text_area[0].set_value(text)
    page.button(key="b_apply").click().run()
    assert page.text_input(key="t_epochs").value == "7" and not page.error


def test_the_page_reads_and_writes_only_under_its_root(page, tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text(yaml.safe_dump(default_experiment("vanilla")))
    for path in ("../outside.yaml", str(outside), "/etc/hostname"):
        page.text_input(key="t_load_path").set_value(path)
        page.button(key="b_load").click().run()
        assert any("outside the dashboard's root" in e.value for e in page.error), path
    assert shown_yaml(page)["topology"]["preset"] == "vertical"  # nothing was loaded
    page.text_input(key="t_save_path").set_value("../escape.yaml")
    page.button(key="b_save").click().run()
    assert not (tmp_path / "escape.yaml").exists()
    assert any("outside the dashboard's root" in e.value for e in page.error)
    page.sidebar.text_input(key="runs_folder").set_value("..").run()
    assert any("outside the dashboard's root" in e.value for e in page.sidebar.error)


def test_a_design_that_does_not_compile_shows_cli_words(page):
    page.selectbox(key="t_preset").set_value("vanilla").run()
    page.button(key="b_add_site").click().run()
    assert len(page.error) == 2  # pinned to the field, and the whole message as `medsplit run` prints it
    with pytest.raises(Exception) as exc:
        from medsplit.config.experiment import parse_experiment

        parse_experiment(shown_yaml(page))
    assert page.error[-1].value == cli_error(exc.value)
    assert "sites: preset 'vanilla' takes exactly 1 site, got 2" in page.error[-1].value
    assert pinned(page, "b_add_site")  # under "Add site"
