"""The experiment YAML: defaults from a synthetic cohort, and errors that name the file, the key and the fix."""

from __future__ import annotations

import pytest
import yaml

from medsplit import ConfigError
from sites.cli import main
from medsplit.config.experiment import dump_experiment, load_experiment, parse_experiment


def _vertical() -> dict:
    return {"experiment": "study", "layout": "vertical", "seed": 3,
            "sites": [{"name": "a", "modalities": {"image": {"shape": [1, 16, 16]}}},
                      {"name": "b", "modalities": {"ehr": {"shape": [7]}}, "labels": ["diagnosis"]}]}


def test_defaults_follow_the_cohort():
    exp = parse_experiment(_vertical())
    assert exp.topology.preset == "vertical" and [s.party for s in exp.sites] == ["imaging", "ehr"]
    assert exp.training.epochs == 5 and exp.server.port == 29500 and exp.server.run_dir.name == "study"
    topo = exp.build_topology()
    parties = {p.name: p for p in topo.parties}
    assert parties["imaging"].data == {"image": (1, 16, 16)} and parties["ehr"].data == {"ehr": (7,)}


def test_same_seed_same_initial_weights():
    a = parse_experiment(_vertical()).build_topology()
    b = parse_experiment(_vertical()).build_topology()
    for sa, sb in zip(a.segments, b.segments):
        for pa, pb in zip(sa.module.parameters(), sb.module.parameters()):
            assert pa.equal(pb)


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(trainig={}), "key 'trainig': unknown key.*did you mean 'training'"),
    (lambda d: d.update(topology={"preset": "vertikal"}), "unknown preset 'vertikal'.*did you mean 'vertical'"),
    (lambda d: d.update(training={"epochs": "five"}), "key 'training.epochs': expected int"),
    (lambda d: d.update(training={"epochs": 0}), "must be >= 1"),
    (lambda d: d["sites"][0].update(secret="x"), r"key 'sites\[0\].secret': unknown key.*secret_env"),
    (lambda d: d["sites"][1]["modalities"].update(ehr={}), r"sites\[1\].modalities.ehr.shape': missing"),
    (lambda d: d.update(sites=[]), "non-empty list of sites"),
    (lambda d: d.pop("experiment"), "key 'experiment': missing"),
    (lambda d: d["sites"][1].update(name="a"), "site names must be unique"),
])
def test_errors_name_the_key(change, match, tmp_path):
    data = _vertical()
    change(data)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=f"(?s){path}.*{match}"):
        load_experiment(path)


def test_party_mapping_must_fit_the_preset():
    data = _vertical()
    data["sites"][1]["party"] = "labs"
    with pytest.raises(ConfigError, match="(?s)site parties.*'ehr', 'imaging'.*map to.*'labs'"):
        parse_experiment(data).build_topology()


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
