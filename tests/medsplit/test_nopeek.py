"""NoPeek: distance correlation against a slow numpy reference, and its effect on training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsplit import NoPeek, PresetConfig, SplitTrainer, build_preset, distance_correlation, preset_data
from medsplit.errors import ConfigError, DataError


def _reference_dcor(x: np.ndarray, z: np.ndarray) -> float:
    """Székely et al. (2007), written out with loops and numpy double centering."""
    n = x.shape[0]
    x = x.reshape(n, -1).astype(np.float64)
    z = z.reshape(n, -1).astype(np.float64)

    def centered(m: np.ndarray) -> np.ndarray:
        d = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                d[i, j] = np.sqrt(np.sum((m[i] - m[j]) ** 2))
        return d - d.mean(axis=0, keepdims=True) - d.mean(axis=1, keepdims=True) + d.mean()

    a, b = centered(x), centered(z)
    dcov2 = (a * b).mean()
    dvar = np.sqrt((a * a).mean() * (b * b).mean())
    return float(np.sqrt(max(dcov2, 0.0) / dvar))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape_x,shape_z", [((24, 1, 8, 8), (24, 16)), ((17, 5), (17, 3, 2, 2)), ((2, 3), (2, 3))])
def test_dcor_matches_reference(shape_x, shape_z, dtype):
    g = torch.Generator().manual_seed(sum(shape_x))
    x = torch.randn(shape_x, generator=g, dtype=torch.float64)
    z = torch.tanh(x.reshape(x.shape[0], -1)[:, :1] * torch.randn(1, int(np.prod(shape_z[1:])), generator=g,
                                                                    dtype=torch.float64))
    z = (z + 0.3 * torch.randn(z.shape, generator=g, dtype=torch.float64)).reshape(shape_z)
    ours = float(distance_correlation(x.to(dtype), z.to(dtype)))
    assert ours == pytest.approx(_reference_dcor(x.numpy(), z.numpy()), abs=1e-5)


def test_dcor_extremes_and_gradient():
    x = torch.randn(32, 10, dtype=torch.float64)
    assert float(distance_correlation(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-6)
    independent = float(distance_correlation(torch.randn(400, 2), torch.randn(400, 2)))
    assert independent < 0.15
    z = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: distance_correlation(x[:12], t), (z,))
    # Repeated rows (zero distances) must not give NaN gradients.
    z2 = torch.cat([z[:6], z[:6]]).detach().requires_grad_(True)
    distance_correlation(x[:12], z2).backward()
    assert torch.isfinite(z2.grad).all()


def test_dcor_refuses_bad_input():
    with pytest.raises(DataError, match="same number of rows"):
        distance_correlation(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(DataError, match="at least 2"):
        distance_correlation(torch.randn(1, 2), torch.randn(1, 2))
    with pytest.raises(ConfigError, match="alpha"):
        NoPeek(-1.0)


def _train(alpha: float) -> tuple[float, float]:
    torch.manual_seed(5)
    cfg = PresetConfig(nopeek=alpha, image_shape=(1, 16, 16))
    topo = build_preset("vanilla", cfg)
    trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=5, patients=480), batch_size=32, seed=5,
                           optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    rec = trainer.fit(6)[-1]
    return rec.dcor["hospital.encoder"], rec.metrics["diagnosis"]["val_auc"]


def test_nopeek_lowers_leakage_and_still_learns():
    dcor_plain, auc_plain = _train(0.0)
    dcor_nopeek, auc_nopeek = _train(1.0)
    assert dcor_nopeek < dcor_plain - 0.05, (dcor_plain, dcor_nopeek)
    assert auc_nopeek > 0.7, auc_nopeek
    assert auc_plain > 0.7
