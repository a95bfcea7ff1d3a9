"""A study's own design in the experiment: an encoder per site and modality, tasks of any kind, its own factory."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from medsplit import ConfigError, SiteData, SplitTrainer, TensorTable, TopologyError
from medsplit.config.experiment import load_experiment, parse_experiment


def _study(**over) -> dict:
    data = {"experiment": "mixed", "topology": {"preset": "vertical"},
            "sites": [{"name": "ct", "modalities": {"image": {"shape": [1, 16, 16], "kind": "dicom"},
                                                    "labs": {"shape": [5], "kind": "table"}}},
                      {"name": "mr", "modalities": {"image": {"shape": [1, 8, 8, 8], "kind": "dicom"}}},
                      {"name": "ehr", "modalities": {"ehr": {"shape": [9], "kind": "table"}},
                       "labels": ["diagnosis", "grade", "los"]}]}
    data.update(over)
    return data




def test_ct_mr_and_ehr_sites_each_get_their_own_part():
    """A site with an image and a small table fuses both at the site; a 3D MR site gets a 3D CNN."""
    topo = parse_experiment(_study()).build_topology()
    parties = {p.name: p.data for p in topo.parties if p.data}
    assert parties == {"ct": {"image": (1, 16, 16), "labs": (5,)}, "mr": {"image": (1, 8, 8, 8)}, "ehr": {"ehr": (9,)}}
    segments = {s.name: s for s in topo.segments}
    assert segments["ct.encoder"].inputs == ("ct.image_encoder", "ct.labs_encoder")  # fused at the site
    assert any(isinstance(m, torch.nn.Conv3d) for m in segments["mr.encoder"].module.modules())


@pytest.mark.parametrize("encoder,module_type", [({"kind": "resnet"}, "ResNet"), ({"kind": "densenet"}, "DenseNet"),
                                                 ({"kind": "cnn", "channels": [4, 8, 8]}, "Sequential")])
def test_an_encoder_is_chosen_per_site_and_modality(encoder, module_type):
    data = _study()
    data["sites"][1]["modalities"]["image"]["encoder"] = encoder
    exp = parse_experiment(data)
    topo = exp.build_topology()
    mr = next(s for s in topo.segments if s.name == "mr.encoder").module
    assert type(mr).__name__ == module_type or any(type(m).__name__ == module_type for m in mr.modules())
    other = parse_experiment(_study())
    assert exp.digest() != other.digest()  # every party must agree on the encoders


def test_an_mlp_encoder_is_sized_by_its_options():
    data = _study()
    data["sites"][2]["modalities"]["ehr"]["encoder"] = {"kind": "mlp", "hidden": [7, 5]}
    topo = parse_experiment(data).build_topology()
    ehr = next(s for s in topo.segments if s.name == "ehr.encoder").module
    sizes = [m.out_features for m in ehr.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [7, 5, 32]


@pytest.mark.parametrize("encoder,key,problem", [
    ({"kind": "resnett"}, "sites[1].modalities.image.encoder.kind", "did you mean 'resnet'"),
    ({"kind": "mlp", "channels": [4]}, "sites[1].modalities.image.encoder", "encoder 'mlp' has no option 'channels'"),
    ({"kind": "module"}, "sites[1].modalities.image.encoder", "needs module: package.module:factory"),
])
def test_a_bad_encoder_is_refused_at_its_key(encoder, key, problem, error):
    data = _study()
    data["sites"][1]["modalities"]["image"]["encoder"] = encoder
    m = error(data)
    assert m["key"] == key and problem in m["problem"], m.group(0)


def test_a_cnn_on_a_table_says_which_site_and_key(tmp_path):
    data = _study()
    data["sites"][2]["modalities"]["ehr"]["encoder"] = {"kind": "cnn"}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError, match=r"(?s)exp.yaml: site 'ehr' data 'ehr': the cnn encoder takes an image.*"
                                          r"shape \(9,\).*fix: use the mlp encoder"):
        load_experiment(path).build_topology()


def test_tasks_of_every_kind_get_heads_of_their_size():
    data = _study(tasks={"diagnosis": {}, "grade": {"kind": "multiclass", "classes": 4},
                         "stay": {"label": "los", "kind": "regression", "head": {"kind": "mlp", "hidden": [6]}}})
    exp = parse_experiment(data)
    assert [(t.name, t.label, t.kind) for t in exp.tasks] == [
        ("diagnosis", "diagnosis", "binary"), ("grade", "grade", "multiclass"), ("stay", "los", "regression")]
    topo = exp.build_topology()
    losses = {t.name: t.loss for t in topo.tasks}
    assert losses == {"diagnosis": "bce", "grade": "ce", "stay": "mse"}
    from medsplit.plan import compile_topology

    plan = compile_topology(topo)
    assert [plan.out_shapes[t.head] for t in topo.tasks] == [(1,), (4,), (1,)]


def test_every_task_kind_trains_and_reports_its_metrics():
    data = _study(topology={"preset": "vertical", "ushaped": True},
                  tasks={"diagnosis": {}, "grade": {"kind": "multiclass", "classes": 3},
                         "los": {"kind": "regression"}})
    exp = parse_experiment(data)
    g = torch.Generator().manual_seed(0)
    n = 48
    severity = torch.randn(n, generator=g)
    tables = {"ct": {"image": torch.randn(n, 1, 16, 16, generator=g), "labs": torch.randn(n, 5, generator=g)},
              "mr": {"image": torch.randn(n, 1, 8, 8, 8, generator=g)},
              "ehr": {"ehr": severity[:, None] + torch.randn(n, 9, generator=g), "diagnosis": (severity > 0).float(),
                      "grade": torch.bucketize(severity, torch.tensor([-0.5, 0.5])),
                      "los": 3 + severity}}
    sites = {p: SiteData(TensorTable({k: v[:40] for k, v in t.items()}), TensorTable({k: v[40:] for k, v in t.items()}))
             for p, t in tables.items()}
    trainer = SplitTrainer(exp.build_topology(), sites, batch_size=8)
    record = trainer.fit(2)[-1]
    assert {"val_auc", "val_acc"} <= set(record.metrics["diagnosis"])
    assert {"val_macro_auc", "val_acc"} <= set(record.metrics["grade"])
    assert {"val_mse", "val_mae", "val_r2"} <= set(record.metrics["los"])


@pytest.mark.parametrize("tasks,key,problem", [
    ({"grade": {"kind": "multiclass"}}, "tasks.grade", "a multiclass task needs classes: N"),
    ({"diagnosis": {"classes": 3}}, "tasks.diagnosis", "classes is set on a binary task"),
    ({"dx": {"label": "diagnosiss"}}, "tasks.dx.label", "did you mean 'diagnosis'"),
    ({"mortality": {}}, "tasks.mortality", "label 'mortality' is not declared by any site"),
    ({"grade": {"kind": "ordinal"}}, "tasks.grade.kind", "'ordinal' is not one of"),
    ({}, "tasks", "is empty"),
])
def test_a_bad_task_is_refused_at_its_key(tasks, key, problem, error):
    m = error(_study(tasks=tasks))
    assert m["key"] == key and problem in m["problem"], m.group(0)


def _one_table(**topology) -> dict:
    return {"experiment": "own", "topology": topology,
            "sites": [{"name": "h", "modalities": {"x": {"shape": [6], "kind": "table"}}, "labels": ["y"]}]}


def test_a_topology_factory_from_a_package_outside_the_project(outside_package):
    exp = parse_experiment(_one_table(factory="mystudy.topologies:build", hidden=5))
    topo = exp.build_topology()
    assert topo.name == "mine" and [s.name for s in topo.segments] == ["h.enc", "server.head"]
    assert exp.digest() != parse_experiment(_one_table(factory="mystudy.topologies:build", hidden=6)).digest()


@pytest.mark.parametrize("factory,problem", [
    ("mystudy.topologies:not_a_topology", "returned int, not a medsplit Topology"),
    ("mystudy.topologies:buld", "has no function 'buld' (did you mean 'build'?)"),
    ("nosuchstudy.topologies:build", "cannot import 'nosuchstudy.topologies' here"),
])
def test_a_bad_factory_names_the_file_and_the_fix(outside_package, factory, problem, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_one_table(factory=factory)))
    with pytest.raises(ConfigError, match=re.escape(problem)) as exc:
        load_experiment(path).build_topology()
    assert str(exc.value).startswith(str(path.resolve()))


def test_preset_and_factory_together_are_refused(error):
    m = error(_one_table(preset="vanilla", factory="mystudy.topologies:build"))
    assert m["key"] == "topology.factory" and "preset and factory are both set" in m["problem"]


def test_an_encoder_module_from_a_package_outside_the_project(outside_package):
    data = _one_table(preset="vanilla")
    data["sites"][0]["modalities"]["x"]["encoder"] = {"kind": "module", "module": "mystudy.topologies:encoder"}
    topo = parse_experiment(data).build_topology()
    enc = next(s for s in topo.segments if s.name == "h.encoder").module
    assert [m.in_features for m in enc.modules() if isinstance(m, torch.nn.Linear)] == [6]
