"""Every preset learns; horizontal and splitfed handle several sites and keep their replicas in step."""

from __future__ import annotations

import pytest
import torch

from medsplit import PRESETS, PresetConfig, SplitTrainer, build_preset, preset_data
from medsplit.engine.party import flat_state


def _fit(preset: str, epochs: int = 4, **cfg_kw):
    torch.manual_seed(0)
    cfg = PresetConfig(**{"image_shape": (1, 16, 16), **cfg_kw})
    topo = build_preset(preset, cfg)
    trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=0, patients=256), batch_size=32,
                           optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    trainer.fit(epochs)
    return trainer


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_learns_above_chance(preset):
    trainer = _fit(preset)
    metrics = trainer.history[-1].metrics
    assert metrics, "no validation metrics"
    for task, m in metrics.items():
        assert m["val_auc"] > 0.75, (preset, task, m)
    first = trainer.history[0].train_loss
    last = trainer.history[-1].train_loss
    assert all(last[t] < first[t] for t in first), (first, last)


@pytest.mark.parametrize("merge", ["sum", "mean"])
def test_vertical_merges(merge):
    trainer = _fit("vertical", epochs=3, merge=merge, ushaped=True)
    assert trainer.history[-1].metrics["diagnosis"]["val_auc"] > 0.75


def test_multitask_on_one_server():
    trainer = _fit("multitask", epochs=3, servers=1)
    assert [p.name for p in trainer.topology.parties] == ["hospital", "server"]
    assert set(trainer.history[-1].metrics) == {"diagnosis", "mortality"}


@pytest.mark.parametrize("preset,sites", [("horizontal", 3), ("horizontal", 4), ("splitfed", 3), ("splitfed", 5)])
def test_many_sites_share_one_client_model(preset, sites):
    trainer = _fit(preset, epochs=2, sites=sites)
    replicas = trainer.topology.replicas[0]
    assert len(replicas) == sites
    vectors = [flat_state(trainer.plan.segments[name].module) for name in replicas]
    for v in vectors[1:]:
        torch.testing.assert_close(v, vectors[0], rtol=0, atol=1e-6)
    weights = [r for r in trainer.meter.audit() if r["kind"] == "weights"]
    assert weights, "client weights must travel, metered"
    numel = trainer.plan.replica_numel(0)
    assert all(r["bytes"] == r["count"] * numel * 4 for r in weights)
    if preset == "splitfed":  # the first site's copy to every other site, then each epoch to the aggregator and back
        assert sum(r["count"] for r in weights) == sites + 2 * sites * 2
        assert {r["dst"] for r in weights if r["src"] != "server"} == {"server"}
    else:  # a hand-off to the next site after each turn, and from the last to all at the epoch's end
        assert sum(r["count"] for r in weights) == (sites - 1) + 2 * ((sites - 1) + (sites - 1))
    # Each site trained on its own patients: the server saw activations from every one of them.
    senders = {r["src"] for r in trainer.meter.audit() if r["kind"] == "activation"}
    assert {p for p in senders if p != "server"} == set(trainer.topology.sites)


def test_splitfed_average_is_weighted_by_rows():
    """FedAvg weights each site by the rows it trained on; a site with more patients pulls harder."""
    torch.manual_seed(0)
    cfg = PresetConfig(image_shape=(1, 16, 16), sites=2)
    topo = build_preset("splitfed", cfg)
    data = preset_data(topo, cfg, seed=0, patients=96)
    from medsplit import SiteData, TensorTable

    small = data["hospital_2"].train
    data["hospital_2"] = SiteData(TensorTable({k: v[:32] for k, v in small.tensors.items()}), data["hospital_2"].val)
    trainer = SplitTrainer(topo, data, batch_size=32, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    captured = {}
    orig = trainer.runners["server"]._average

    def spy(op, step, phase):
        captured.update({p: v.clone() for p, v in trainer.runners["server"]._weights_in[0].items()})
        captured["rows"] = dict(trainer.runners["server"].rows_seen)
        orig(op, step, phase)

    trainer.runners["server"]._average = spy
    trainer.train_epoch()
    assert captured["rows"] == {"hospital_1": 96, "hospital_2": 32}
    expected = (96 * captured["hospital_1"] + 32 * captured["hospital_2"]) / 128
    torch.testing.assert_close(flat_state(trainer.plan.segments["hospital_1.encoder"].module), expected)


def test_3d_images():
    trainer = _fit("ushaped", epochs=1, image_shape=(1, 8, 16, 16))
    assert trainer.plan.edges["hospital.head->server.body"].shape == (16, 2, 4, 4)
    assert trainer.history[-1].metrics["diagnosis"]["n"] > 0


def test_flops_per_step_are_counted_per_party():
    trainer = _fit("vertical", epochs=1)
    flops = trainer.flops_per_step()
    assert set(flops) == {"imaging", "ehr", "server"}
    assert flops["imaging"] > flops["ehr"] > 0 and flops["server"] > 0
    # A conv encoder on 16x16 images with batch 32: the first conv alone is 2*32*8*8*8*9 MACs forward.
    assert flops["imaging"] > 2 * 32 * 8 * 8 * 8 * 9
