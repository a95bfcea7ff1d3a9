"""The experiment's performance keys: codecs per edge, pipelined steps, a device per party."""

from __future__ import annotations

import copy

import pytest
import yaml

from medsplit import ConfigError, Kind, TopologyError
from medsplit.config.experiment import load_experiment, parse_experiment
from medsplit.plan import compile_topology

IMAGE = {"image": {"shape": [1, 16, 16]}}


def _vanilla(**sections) -> dict:
    data = {"experiment": "study", "sites": [{"name": "hospital", "modalities": copy.deepcopy(IMAGE),
                                             "labels": ["diagnosis"]}]}
    for key, value in sections.items():
        data[key] = value
    return data


def test_codecs_reach_the_plan_and_the_digest():
    plain = parse_experiment(_vanilla())
    coded = parse_experiment(_vanilla(topology={"preset": "vanilla", "codecs": {"*": ["topk:0.1", "int8"]}}))
    plan = compile_topology(coded.build_topology())
    (edge,) = plan.edges
    assert plan.codecs[(edge, Kind.ACTIVATION)].name == plan.codecs[(edge, Kind.GRADIENT)].name == "topk:0.1+int8"
    assert not compile_topology(plain.build_topology()).codecs
    assert coded.digest() != plain.digest()  # every party must agree on the codecs
    # ...while an experiment that sets none keeps its digest (run ids, checkpoints) from before the key existed
    assert plain.digest() == parse_experiment(_vanilla(training={"micro_batches": 1})).digest()


def test_a_bad_codec_is_refused_naming_the_file_and_key(tmp_path, one_format):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_vanilla(topology={"preset": "vanilla", "codecs": {"*": ["int4"]}})))
    with pytest.raises(ConfigError) as exc:
        load_experiment(path)
    match = one_format(exc.value)
    assert match["file"] == str(path.resolve()) and "topology.codecs" in str(exc.value)
    assert "unknown codec 'int4'" in str(exc.value) and "int8" in str(exc.value)


def test_an_edge_the_topology_lacks_is_refused_with_the_edges_it_has():
    exp = parse_experiment(_vanilla(topology={"preset": "vanilla", "codecs": {"hospital->server": ["int8"]}}))
    with pytest.raises(TopologyError, match=r"not a cut edge.*\n  fix: cut edges are: hospital.encoder->server.head"):
        compile_topology(exp.build_topology())


def test_micro_batches_and_devices():
    exp = parse_experiment(_vanilla(training={"micro_batches": 4}, server={"device": "cuda:1"}))
    assert exp.training.micro_batches == 4
    parties = {p.name: p.device for p in exp.build_topology().parties}
    assert parties == {"hospital": "cpu", "server": "cuda:1"}
    data = _vanilla()
    data["sites"][0]["device"] = "cuda"
    assert {p.name: p.device for p in parse_experiment(data).build_topology().parties}["hospital"] == "cuda"
    data["sites"][0]["device"] = "quantum"
    with pytest.raises(ConfigError, match=r"sites\[0\].device.*'quantum' is not a device"):
        parse_experiment(data)
    with pytest.raises(ConfigError, match="micro_batches"):
        parse_experiment(_vanilla(training={"micro_batches": 0}))
