"""Each attack where it must succeed (no defense, an invertible cut), and its defenses where they must bite."""

from __future__ import annotations

import pytest
import torch

from medsplit.privacy import label_leakage, reconstruct, score_reconstruction, train_decoder
from medsplit.synthetic import CohortSpec, make_cohort
from medsplit.topology import GaussianNoise, Marvell, MaxNorm


def _gradients(n: int, positives: float, seed: int, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut gradients of a logistic head, dL/dh = (p - y) w, for a model that predicts the base rate: what a
    label owner sends back early in training (Li et al.'s setting)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < positives).float()
    w = torch.randn(d, generator=g)
    p = (positives + 0.05 * torch.randn(n, generator=g)).clamp(0.01, 0.99)
    return (p - y).unsqueeze(1) * w + 0.01 * torch.randn(n, d, generator=g), y


def test_norm_attack_reads_a_rare_class_and_direction_attack_reads_any():
    rare = label_leakage([_gradients(64, 0.1, s) for s in range(20)])
    balanced = label_leakage([_gradients(64, 0.5, s) for s in range(20)])
    assert rare.norm_auc > 0.95, rare
    assert rare.direction_auc > 0.95 and balanced.direction_auc > 0.95, (rare, balanced)
    assert rare.batches == 20 and rare.patients == 1280 and 0 < rare.positives < 300


def test_label_defenses_blind_the_attacks_they_target():
    batches = [_gradients(64, 0.1, s) for s in range(20)]
    torch.manual_seed(0)
    max_norm = label_leakage([(MaxNorm().label_gradient(g, y), y) for g, y in batches])
    marvell = label_leakage([(Marvell(8.0).label_gradient(g, y), y) for g, y in batches])
    assert max_norm.norm_auc < 0.65, max_norm  # the norm attack is blind; the direction attack is not
    assert max_norm.direction_auc > 0.9, max_norm
    assert marvell.norm_auc < 0.7 and marvell.direction_auc < 0.7, marvell


def _images(n: int, seed: int) -> torch.Tensor:
    x = make_cohort(CohortSpec(n, image_size=16), seed)["image"]
    return (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)


@pytest.mark.slow
def test_decoder_inverts_an_invertible_image_cut_and_noise_defeats_it():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)  # same resolution, four channels: the image is all there
    aux, held = _images(480, 1), _images(64, 2)
    noisy = GaussianNoise(4.0)
    results = {}
    for name, defend in (("clean", lambda z: z), ("noisy", lambda z: noisy.activation(z, train=False))):
        with torch.no_grad():
            cut_aux, cut_held = defend(conv(aux)), defend(conv(held))
        decoder = train_decoder(cut_aux, aux, steps=300)
        results[name] = score_reconstruction(held, reconstruct(decoder, cut_held), aux.mean(0))
    clean, dirty = results["clean"], results["noisy"]
    assert clean.ssim > 0.8, clean
    assert clean.baseline["ssim"] < 0.1 and clean.mse < 0.2 * clean.baseline["mse"], clean
    assert dirty.ssim < clean.ssim - 0.3 and dirty.mse > 3 * clean.mse, (clean, dirty)


@pytest.mark.slow
def test_decoder_recovers_a_table_through_an_invertible_map():
    g = torch.Generator().manual_seed(0)
    ehr = make_cohort(CohortSpec(600), 3)["ehr"]
    mix = torch.linalg.qr(torch.randn(12, 12, generator=g))[0]
    decoder = train_decoder(ehr[:500] @ mix, ehr[:500], steps=400)
    result = score_reconstruction(ehr[500:], reconstruct(decoder, ehr[500:] @ mix), ehr[:500].mean(0))
    assert result.kind == "table" and result.r2 > 0.9, result
    assert abs(result.baseline["r2"]) < 0.1 and len(result.r2_per_feature) == 12
