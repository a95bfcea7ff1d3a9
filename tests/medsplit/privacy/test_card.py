"""The card end to end: hooks at the runner, the attacks on trained presets, and `medsplit privacy --json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from medsplit import PresetConfig, build_preset, preset_data
from medsplit.privacy import CardRun, attack, render_card
from medsplit.topology import CutDefense, defend
from sites.cli import main


@dataclass(frozen=True)
class _Shift(CutDefense):
    """Adds a constant to what a site sends (a test probe: easy to recognise on the wire)."""

    by: float
    name: ClassVar[str] = "shift"

    def activation(self, cut, *, train):
        return cut + self.by


@dataclass(frozen=True)
class _Scale(CutDefense):
    by: float
    name: ClassVar[str] = "scale"
    protects: ClassVar[str] = "labels"

    def label_gradient(self, grad, labels):
        assert labels is not None and labels.shape[0] == grad.shape[0]
        return grad * self.by


def _run(defenses=None, patients=64):
    torch.manual_seed(0)
    cfg = PresetConfig(image_shape=(1, 16, 16))
    topo = build_preset("ushaped", cfg)
    if defenses:
        topo = defend(topo, {"hospital": defenses})
    run = CardRun.start(topo, preset_data(topo, cfg, seed=0, patients=patients), batch_size=16, seed=0)
    run.trainer.fit(1)
    return run, cfg, topo


@pytest.mark.slow
def test_the_runner_sends_the_defended_cut_and_the_defended_gradient():
    plain, _, _ = _run(patients=32)
    probed, _, _ = _run([_Scale(3.0)], patients=32)
    assert plain.tap.gradients.keys() == probed.tap.gradients.keys()
    pairs = zip(sorted(probed.tap.gradients.items()), sorted(plain.tap.gradients.items()), strict=True)
    for (key, got), (_, want) in pairs:
        if key[0] == "server":  # the gradient the labels' site sent back: scaled at the tail, nothing else changed
            assert all(torch.allclose(g, 3.0 * w, atol=1e-6) for (_, g), (_, w) in zip(got, want, strict=True))
    shifted, _, _ = _run([_Shift(100.0)], patients=32)
    batch = shifted.trainer.data["hospital"].val.batch([0, 1])
    sent = shifted.trainer.runners["hospital"].cut_outputs(batch)["hospital.head"]
    assert float(sent.min()) >= 100.0  # a ReLU'd feature map, shifted on its way out


@pytest.mark.slow
def test_card_on_ushaped_shows_what_leaks():
    run, cfg, topo = _run(patients=160)
    aux = preset_data(topo, cfg, seed=99, patients=160)
    card = attack(run, aux, decoder_steps=150)
    cut = card.section["cuts"]["hospital.head"]
    assert cut["site"] == "hospital" and cut["to"] == ["server"] and cut["shape"] == [16, 4, 4]
    assert 0.0 < cut["dcor"] <= 1.0
    rec = cut["reconstruction"]
    assert rec["ssim"] > rec["baseline"]["ssim"] + 0.1, rec  # the decoder learned real structure
    assert rec["mse"] < rec["baseline"]["mse"]
    labels = card.section["labels"]["diagnosis"]
    assert labels["shared"] is False and labels["direction_leak_auc"] > 0.9, labels
    assert list(labels["attackers"]) == ["server via server.body->hospital.tail"]
    assert card.section["defenses"] == {"hospital": []}
    assert card.examples["hospital.head"][0].shape == (6, 1, 16, 16)
    assert "LEAKS" in render_card(card.section)


@pytest.mark.slow
def test_card_on_vanilla_says_labels_are_sent_in_the_clear():
    torch.manual_seed(0)
    cfg = PresetConfig(image_shape=(1, 16, 16))
    topo = build_preset("vanilla", cfg)
    run = CardRun.start(topo, preset_data(topo, cfg, seed=0, patients=64), batch_size=16, seed=0)
    run.trainer.fit(1)
    card = attack(run, preset_data(topo, cfg, seed=9, patients=64), decoder_steps=20)
    labels = card.section["labels"]["diagnosis"]
    assert labels == {"shared": True, "sent_to": ["server"], "norm_leak_auc": None, "direction_leak_auc": None,
                      "attackers": {}}
    assert "LABELS ARE SENT IN THE CLEAR to server" in render_card(card.section)


@pytest.mark.slow
def test_privacy_json_contract_and_card_files(tmp_path, capsys):
    path, run_dir = tmp_path / "card.json", tmp_path / "run"
    rc = main(["privacy", "--preset", "vertical", "--ushaped", "--epochs", "1", "--patients", "48",
               "--aux-patients", "48", "--decoder-steps", "20", "--label-defense", "marvell", "--noise", "0.5",
               "--seed", "2", "--json", str(path), "--run-dir", str(run_dir), "--quiet"])
    assert rc == 0
    summary = json.loads(path.read_text())
    assert {"preset", "seed", "metrics", "bytes", "audit", "dcor", "privacy"} <= set(summary)
    assert (summary["preset"], summary["seed"]) == ("vertical", 2)
    privacy = summary["privacy"]
    assert set(privacy) == {"cuts", "labels", "defenses"}
    assert set(privacy["cuts"]) == {"imaging.encoder", "ehr.encoder"}
    for cut in privacy["cuts"].values():
        assert isinstance(cut["dcor"], float)
        assert {"mse", "psnr", "ssim", "r2"} <= set(cut["reconstruction"])
    assert isinstance(privacy["cuts"]["imaging.encoder"]["reconstruction"]["ssim"], float)
    assert privacy["cuts"]["imaging.encoder"]["reconstruction"]["r2"] is None
    assert isinstance(privacy["cuts"]["ehr.encoder"]["reconstruction"]["r2"], float)
    assert privacy["cuts"]["ehr.encoder"]["reconstruction"]["ssim"] is None
    task = privacy["labels"]["diagnosis"]
    assert task["shared"] is False and isinstance(task["norm_leak_auc"], float)
    assert isinstance(task["direction_leak_auc"], float)
    assert privacy["defenses"] == {"ehr": ["noise(sigma=0.5)", "marvell(strength=1)"],
                                   "imaging": ["noise(sigma=0.5)"]}
    files = {p.name for p in (run_dir / "privacy").iterdir()}
    assert {"card.json", "card.txt", "reconstruction_imaging.encoder.png", "roc_diagnosis.png"} <= files
    assert (run_dir / "run.sqlite").exists()
    assert "PRIVACY REPORT CARD" in capsys.readouterr().out


def test_privacy_refuses_a_label_defense_where_labels_leave_in_the_clear(tmp_path, capsys):
    path = tmp_path / "failed.json"
    rc = main(["privacy", "--preset", "vanilla", "--label-defense", "max_norm", "--json", str(path),
               "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no site of 'vanilla' keeps its labels" in err and "in the clear" in err
    assert json.loads(path.read_text())["status"] == "failed"
    assert main(["privacy", "--preset", "ushaped", "--noise", "-1"]) == 2
    assert "--noise must be >= 0" in capsys.readouterr().err
