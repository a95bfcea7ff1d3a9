"""The experiment YAML: defaults from the preset registry, bounds, unused keys, and errors in the one format."""

from __future__ import annotations

import copy

import pytest
import yaml

from medsplit import ConfigError
from medsplit.config.experiment import TopologyConfig, dump_experiment, load_experiment, parse_experiment
from medsplit.topology.presets import KNOBS, PRESETS, PresetConfig
from sites.cli import main

IMAGE, EHR = {"image": {"shape": [1, 16, 16]}}, {"ehr": {"shape": [7]}}


def _vertical() -> dict:
    return {"experiment": "study", "seed": 3,
            "sites": [{"name": "a", "modalities": copy.deepcopy(IMAGE)},
                      {"name": "b", "modalities": copy.deepcopy(EHR), "labels": ["diagnosis"]}]}


def _images(n: int, preset: str | None = None, **knobs) -> dict:
    data = {"experiment": "study", "sites": [{"name": f"s{i}", "modalities": copy.deepcopy(IMAGE),
                                             "labels": ["diagnosis"]} for i in range(n)]}
    if preset:
        data["topology"] = {"preset": preset, **knobs}
    return data




# --- defaults come from the preset registry ------------------------------------------------------------


def test_defaults():
    """Sites with different data of the same patients: vertical; each site's party is its name; a binary task
    for the label the preset uses; the training and server sections' defaults."""
    exp = parse_experiment(_vertical())
    assert exp.topology.preset == "vertical" and [s.party for s in exp.sites] == ["a", "b"]
    assert [(t.name, t.label, t.kind) for t in exp.tasks] == [("diagnosis", "diagnosis", "binary")]
    assert exp.training.epochs == 5 and exp.server.port == 29500 and exp.server.run_dir.name == "study"
    topo = exp.build_topology()
    parties = {p.name: p for p in topo.parties}
    assert parties["a"].data == {"image": (1, 16, 16)} and parties["b"].data == {"ehr": (7,)}


@pytest.mark.parametrize("n,preset", [(1, "vanilla"), (2, "horizontal"), (3, "horizontal"), (5, "horizontal")])
def test_default_preset_follows_the_sites(n, preset):
    """One site: vanilla; sites that hold the same data: horizontal (and vertical when their data differ)."""
    exp = parse_experiment(_images(n))
    assert exp.topology.preset == preset and [s.party for s in exp.sites] == [f"s{i}" for i in range(n)]


def test_a_party_is_the_sites_name_unless_given():
    data = _vertical()
    data["sites"][0]["party"] = "imaging"
    assert [s.party for s in parse_experiment(data).sites] == ["imaging", "b"]


def test_knob_defaults_are_the_presets():
    defaults, topo = PresetConfig(), TopologyConfig(preset="vanilla")
    assert set(TopologyConfig.model_fields) - {"preset", "factory", "codecs"} == set(KNOBS)  # codecs: any topology
    for knob in KNOBS:
        assert getattr(topo, knob) == getattr(defaults, knob), knob


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_knob_a_preset_reads_is_accepted_and_reaches_the_topology(preset):
    spec = PRESETS[preset]
    n = max(spec.min_sites, 2) if spec.max_sites is None else spec.min_sites
    data = _vertical() if preset == "vertical" else _images(n)
    changed = {"ushaped": True, "merge": "sum", "nopeek": 0.5, "hops": 2, "servers": 1, "cut_features": 16,
               "hidden": 8, "channels": [4, 8]}
    data["topology"] = {"preset": preset, **{k: changed[k] for k in spec.knobs}}
    cfg = parse_experiment(data).preset_config()
    for knob in spec.knobs:
        assert getattr(cfg, knob) == (tuple(changed[knob]) if knob == "channels" else changed[knob])


@pytest.mark.parametrize("preset,knob", [(p, k) for p, spec in PRESETS.items() for k in KNOBS if k not in spec.knobs])
def test_a_knob_the_preset_does_not_read_is_refused(preset, knob, error):
    spec = PRESETS[preset]
    data = _vertical() if preset == "vertical" else _images(spec.min_sites)
    data["topology"] = {"preset": preset, knob: PresetConfig().__dict__[knob]}  # even at its default value
    m = error(data)
    assert m["key"] == f"topology.{knob}" and f"preset '{preset}' does not read '{knob}'" in m["problem"]
    assert f"it reads {', '.join(spec.knobs)}" in m["problem"] and f"delete '{knob}'" in m["fix"]


# --- every accepted key is used ------------------------------------------------------------------------


@pytest.mark.parametrize("key,value", [("layout", "vertical"), ("split", {"val_fraction": 0.2}),
                                       ("labels", {"diagnosis": {"owners": ["b"]}}),
                                       ("alignment", {"method": "psi"}), ("synth", {"version": 1})])
def test_keys_nothing_reads_are_refused(key, value, error):
    m = error({**_vertical(), key: value})
    assert m["key"] == key and "unknown key" in m["problem"] and "is not used" in m["problem"]
    assert m["fix"] == f"delete '{key}'; nothing reads it"


def test_a_sites_patient_count_is_refused(error):
    data = _vertical()
    data["sites"][0]["patients"] = 200
    m = error(data)
    assert m["key"] == "sites[0].patients" and "is not used" in m["problem"] and "delete 'patients'" in m["fix"]


# --- bounds, types and shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize("section,values,key,problem", [
    ("training", {"epochs": 0}, "training.epochs", "0 is out of range: it must be >= 1"),
    ("training", {"batch_size": 0}, "training.batch_size", "must be >= 1"),
    ("training", {"lr": 0}, "training.lr", "must be > 0"),
    ("training", {"lr": -0.1}, "training.lr", "must be > 0"),
    ("training", {"lr": float("nan")}, "training.lr", "is not a finite number"),
    ("training", {"checkpoint_every": 0}, "training.checkpoint_every", "must be >= 1"),
    ("training", {"timeout": 0}, "training.timeout", "must be > 0"),
    ("training", {"rejoin_timeout": -5}, "training.rejoin_timeout", "must be > 0"),
    ("training", {"epochs": "five"}, "training.epochs", "'five' is not an integer"),
    ("training", {"epochs": 2.5}, "training.epochs", "2.5 is not an integer"),
    ("server", {"port": -1}, "server.port", "must be >= 0"),
    ("server", {"port": 65536}, "server.port", "must be <= 65535"),
    ("server", {"host": ""}, "server.host", "is empty"),
    ("topology", {"nopeek": -0.1}, "topology.nopeek", "must be >= 0"),
    ("topology", {"cut_features": 0}, "topology.cut_features", "must be >= 1"),
    ("topology", {"hidden": 0}, "topology.hidden", "must be >= 1"),
    ("topology", {"channels": []}, "topology.channels", "is empty"),
    ("topology", {"channels": [8, 0]}, "topology.channels[1]", "must be >= 1"),
    ("topology", {"ushaped": "yes"}, "topology.ushaped", "'yes' is not true or false"),
    ("topology", {"merge": "avg"}, "topology.merge", "'avg' is not one of concat, sum, mean"),
    ("topology", {"preset": "vertikal"}, "topology.preset", "unknown preset 'vertikal' (did you mean 'vertical'?)"),
])
def test_out_of_range_and_wrong_type_values_name_the_key(section, values, key, problem, error):
    data = _vertical()
    data[section] = {**({"preset": "vertical"} if section == "topology" else {}), **values}
    m = error(data)
    assert m["key"] == key and problem in m["problem"], m.group(0)


@pytest.mark.parametrize("preset,knob", [("multihop", "hops"), ("multitask", "servers")])
def test_relay_and_server_counts_are_at_least_one(preset, knob, error):
    m = error(_images(1, preset, **{knob: 0}))
    assert m["key"] == f"topology.{knob}" and "must be >= 1" in m["problem"]


def test_seed_is_a_non_negative_integer(error):
    assert error({**_vertical(), "seed": -1})["key"] == "seed"
    assert "is not an integer" in error({**_vertical(), "seed": "0"})["problem"]


@pytest.mark.parametrize("shape,key,problem", [
    ([7, "x"], r"sites[1].modalities.ehr.shape[1]", "'x' is not an integer"),
    ([], "sites[1].modalities.ehr.shape", "is empty"),
    ([0], "sites[1].modalities.ehr.shape[0]", "0 is out of range"),
    (7, "sites[1].modalities.ehr.shape", "7 is not a list"),
    ([7, 2], "sites[1].modalities.ehr", "[7, 2] is neither a table [F] nor an image"),
    ([1, 2, 3, 4, 5], "sites[1].modalities.ehr.shape", "has 5 items"),
    (None, "sites[1].modalities.ehr.shape", "None is not a list"),
])
def test_a_bad_shape_is_a_config_error_at_its_key(shape, key, problem, error):
    data = _vertical()
    data["sites"][1]["modalities"]["ehr"]["shape"] = shape
    m = error(data)
    assert m["key"] == key and problem in m["problem"], m.group(0)


@pytest.mark.parametrize("kind,shape,problem", [("dicom", [32, 32], "[C, H, W] or [C, D, H, W]"),
                                                 ("dicom", [16], "[C, H, W] or [C, D, H, W]"),
                                                 ("table", [1, 16, 16], "a table's per-sample shape is [F]")])
def test_a_shape_fits_the_kind_of_data(kind, shape, problem, error):
    data = _vertical()
    data["sites"][0]["modalities"]["image"].update(kind=kind, shape=shape)
    m = error(data)
    assert m["key"] == "sites[0].modalities.image" and problem in m["problem"], m.group(0)


def test_horizontal_sites_must_hold_the_same_data(tmp_path):
    data = _images(3, "horizontal")
    data["sites"][2]["modalities"]["image"]["shape"] = [1, 32, 32]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"(?s)exp.yaml: preset 'horizontal' trains one client model.*'s2' holds "
                                          r"\{'image': \(1, 32, 32\)\}.*fix: give every site the same"):
        load_experiment(path).build_topology()


def test_vertical_sites_may_hold_the_same_key_with_their_own_shapes():
    """Two institutions holding different columns of the same patients, both under the key 'ehr'."""
    data = {"experiment": "two-ehr", "topology": {"preset": "vertical"},
            "sites": [{"name": "a", "modalities": {"ehr": {"shape": [15], "kind": "table"}}},
                      {"name": "b", "modalities": {"ehr": {"shape": [22], "kind": "table"}}, "labels": ["y"]}]}
    topo = parse_experiment(data).build_topology()
    assert {p.name: p.data for p in topo.parties if p.data} == {"a": {"ehr": (15,)}, "b": {"ehr": (22,)}}


def test_a_missing_shape_says_what_it_is(error):
    data = _vertical()
    data["sites"][1]["modalities"]["ehr"] = {}
    m = error(data)
    assert m["key"] == "sites[1].modalities.ehr.shape" and m["problem"] == "is required"
    assert "per-sample shape" in m["fix"]


# --- sites and parties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("change,key,problem", [
    (lambda d: d.update(trainig={}), "trainig", "unknown key (did you mean 'training'?)"),
    (lambda d: d["sites"][0].update(secret="x"), "sites[0].secret", "unknown key (did you mean 'secret_env'?)"),
    (lambda d: d.update(sites=[]), "sites", "is empty"),
    (lambda d: d.pop("experiment"), "experiment", "is required"),
    (lambda d: d["sites"][1].update(name="a"), "sites[1].name", "'a' is also the name of sites[0]"),
    (lambda d: d["sites"][0].update(secret_env="A", secret_file="a.key"), "sites[0]",
     "secret_env and secret_file are both set"),
    (lambda d: d["sites"][0]["modalities"]["image"].update(kind="dcm"), "sites[0].modalities.image.kind",
     "'dcm' is not one of 'dicom' or 'table' (did you mean 'dicom'?)"),
])
def test_errors_name_the_file_the_key_and_the_fix(change, key, problem, error):
    data = _vertical()
    change(data)
    m = error(data)
    assert m["key"] == key and problem in m["problem"], m.group(0)


def test_two_sites_on_one_party_are_refused(error):
    data = _vertical()
    data["topology"] = {"preset": "vertical"}
    data["sites"][1]["modalities"] = copy.deepcopy(IMAGE)
    for site in data["sites"]:
        site["party"] = "imaging"
    m = error(data)
    assert m["key"] == "sites[1].party" and "'imaging' is also the party of sites[0] ('a')" in m["problem"]
    assert "give each site its own party" in m["fix"]


@pytest.mark.parametrize("party,problem", [("server", "is the name of a server or relay party"),
                                           ("relay_1", "is the name of a server or relay party"),
                                           ("a/b", "cannot name a party")])
def test_a_party_name_must_be_usable(party, problem, error):
    data = _vertical()
    data["sites"][0]["party"] = party
    m = error(data)
    assert m["key"] == "sites[0].party" and problem in m["problem"]


@pytest.mark.parametrize("preset,n", [("vertical", 1), ("vanilla", 2), ("horizontal", 1)])
def test_a_preset_takes_its_number_of_sites(preset, n, error):
    m = error(_images(n, preset))
    assert m["key"] == "sites" and f"preset '{preset}' takes {PRESETS[preset].sites_wanted}, got {n}" in m["problem"]


# --- files --------------------------------------------------------------------------------------------


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("experiment: a\nseed: 1\nseed: 2\nsites: [{name: a, modalities: {image: {shape: [1, 8, 8]}}}]\n")
    with pytest.raises(ConfigError, match=r"\(YAML\): not valid YAML: .*'seed' appears twice \(first on line 2\)"):
        load_experiment(path)


def test_paths_are_relative_to_the_experiment_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    data = _vertical()
    data["server"] = {"run_dir": "runs/x"}
    data["sites"][0].update(config="a/site.yaml", public_key="keys/a.pub")
    path = tmp_path / "exp.yaml"
    dump_experiment(data, path)
    exp = load_experiment(path)
    assert exp.server.run_dir == tmp_path / "runs" / "x" and exp.sites[0].config == tmp_path / "a" / "site.yaml"
    assert exp.sites[0].public_key == tmp_path / "keys" / "a.pub" and exp.sites[1].config is None


def test_dump_refuses_what_would_not_load(tmp_path):
    path = tmp_path / "exp.yaml"
    with pytest.raises(ConfigError, match="layout: unknown key"):
        dump_experiment({**_vertical(), "layout": "vertical"}, path)
    assert not path.exists()


def test_same_seed_same_initial_weights():
    a = parse_experiment(_vertical()).build_topology()
    b = parse_experiment(_vertical()).build_topology()
    for sa, sb in zip(a.segments, b.segments, strict=True):
        for pa, pb in zip(sa.module.parameters(), sb.module.parameters(), strict=True):
            assert pa.equal(pb)


def test_the_digest_covers_what_parties_must_agree_on():
    base = parse_experiment(_vertical()).digest()
    assert parse_experiment(_vertical()).digest() == base
    other = _vertical()
    other["training"] = {"epochs": 6}
    assert parse_experiment(other).digest() != base
    moved = _vertical()
    moved["server"] = {"run_dir": "elsewhere"}  # paths are not part of it
    assert parse_experiment(moved).digest() == base


def test_secrets_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    (tmp_path / "s.key").write_text("file-secret\n")
    data = _vertical()
    data["sites"][0]["secret_env"] = "MEDSPLIT_TEST_SECRET"
    data["sites"][1]["secret_file"] = "s.key"
    path = tmp_path / "exp.yaml"
    dump_experiment(data, path)
    exp = load_experiment(path)
    with pytest.raises(ConfigError, match="MEDSPLIT_TEST_SECRET is not set"):
        exp.sites[0].secret()
    monkeypatch.setenv("MEDSPLIT_TEST_SECRET", "env-secret")
    assert exp.sites[0].secret() == b"env-secret" and exp.sites[1].secret() == b"file-secret"


def test_run_refuses_a_missing_file_clearly(capsys, tmp_path):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_site_defenses_are_built_where_they_act_and_agreed_on():
    from pathlib import Path

    base = yaml.safe_load((Path(__file__).resolve().parents[3] / "experiments" / "vertical.yaml").read_text())
    base["topology"]["ushaped"] = True
    data = copy.deepcopy(base)
    data["sites"][1]["defenses"] = [{"name": "noise", "strength": 1.0}, {"name": "marvell", "strength": 4}]
    exp = parse_experiment(data)
    got = {s.name: [d.describe() for d in s.defenses] for s in exp.build_topology().segments}
    assert got["ehr.encoder"] == ["noise(sigma=1)"] and got["ehr.tail"] == ["marvell(strength=4)"]
    assert got["imaging.encoder"] == []
    assert exp.digest() != parse_experiment(base).digest()  # parties with different defenses do not train together
    data["sites"][0]["defenses"] = [{"name": "marvell"}]  # the imaging site holds no labels
    with pytest.raises(ConfigError, match="site 'ct_imaging' defenses: marvell.*no place"):
        parse_experiment(data).build_topology()
    data["sites"][0]["defenses"] = [{"name": "noise"}]
    with pytest.raises(ConfigError, match=r"sites\[0\]\.defenses\[0\]: defense 'noise' needs a strength"):
        parse_experiment(data)
    data["sites"][0]["defenses"] = [{"name": "nois", "strength": 1}]
    with pytest.raises(ConfigError, match="did you mean 'noise'"):
        parse_experiment(data)
