"""Label privacy and the audit: only declared cut tensors leave a site; labels only where the topology says."""

from __future__ import annotations

import pytest
import torch

from medsplit import PresetConfig, SplitTrainer, build_preset, preset_data


def _run(preset: str, **cfg_kw):
    torch.manual_seed(0)
    cfg = PresetConfig(image_shape=(1, 16, 16), **cfg_kw)
    topo = build_preset(preset, cfg)
    trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=0, patients=64), batch_size=16)
    trainer.fit(1)
    return topo, trainer


def _assert_only_cuts_leave_sites(topo, trainer):
    audit = trainer.meter.audit()
    assert audit, "nothing was audited"
    sites = {p.name: p for p in topo.parties if p.data}
    plan = trainer.plan
    for row in audit:
        assert row["kind"] in ("activation", "gradient", "fingerprint"), row
        if row["kind"] == "fingerprint":  # a keyed hash of the batch's row IDs, to a server without the key
            assert row["shapes"] == [[32]] and row["dtypes"] == ["uint8"] and row["dst"] == "server"
            continue
        if row["src"] in sites:
            if row["kind"] == "activation":
                edge = plan.edges[row["edge"]]
                assert edge.src_party == row["src"] and row["shapes"] == [list(edge.shape)]
            raw_shapes = [list(s) for s in sites[row["src"]].data.values()]
            assert not any(shape in raw_shapes for shape in row["shapes"]), row
    return audit


@pytest.mark.parametrize("preset,kw", [("ushaped", {}), ("vertical", {"ushaped": True})])
def test_no_labels_and_no_raw_data_leave_any_site(preset, kw):
    topo, trainer = _run(preset, **kw)
    audit = _assert_only_cuts_leave_sites(topo, trainer)
    assert not any(r["kind"] == "label" for r in audit)
    assert not trainer.plan.label_flows


def test_vanilla_audit_shows_the_labels_it_shares():
    """The positive control: the audit does record labels when the topology sends them."""
    topo, trainer = _run("vanilla")
    labels = [r for r in trainer.meter.audit() if r["kind"] == "label"]
    assert [(r["src"], r["dst"], r["dtypes"]) for r in labels] == [("hospital", "server", ["float32"])]
    assert labels[0]["bytes"] == 4 * (64 + 16)  # every train and validation row, once, as float32


def test_audit_bytes_match_the_cut_sizes():
    topo, trainer = _run("vanilla")
    audit = {(r["edge"], r["kind"]): r for r in trainer.meter.audit()}
    act = audit[("hospital.encoder->server.head", "activation")]
    grad = audit[("hospital.encoder->server.head", "gradient")]
    per_row = 16 * 4 * 4 * 4  # (16, 4, 4) float32 per patient
    assert act["bytes"] == per_row * (64 + 16)  # train and validation forward passes
    assert grad["bytes"] == per_row * 64  # gradients only in training
    assert act["count"] == 4 + 1 and grad["count"] == 4
    totals = trainer.meter.bytes_by_party()
    assert totals["hospital"]["sent"] == act["bytes"] + audit[("labels:diagnosis:hospital->server", "label")]["bytes"]
    assert totals["hospital"]["received"] == grad["bytes"]
    assert totals["server"]["received"] == totals["hospital"]["sent"]


def test_audit_listener_sees_every_record():
    torch.manual_seed(0)
    cfg = PresetConfig(image_shape=(1, 16, 16))
    topo = build_preset("ushaped", cfg)
    trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=0, patients=32), batch_size=16)
    records = []
    trainer.meter.listen(records.append)
    trainer.train_epoch()
    sent = [r for r in records if r.direction == "sent"]
    assert len(sent) == 2 * 4  # two steps x (activation and gradient on two edges)
    assert {(r.src, r.dst, r.kind) for r in sent} == {
        ("hospital", "server", "activation"), ("server", "hospital", "gradient"),
        ("server", "hospital", "activation"), ("hospital", "server", "gradient")}
    assert all(r.step in (1, 2) and r.bytes > 0 for r in sent)
