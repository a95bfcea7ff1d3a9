"""SSIM against MONAI's, PSNR, per-feature R², ROC curves and leak AUCs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsplit.engine.metrics import roc_auc
from medsplit.privacy import leak_auc, psnr, r2_per_feature, roc_curve, ssim
from medsplit.synthetic import CohortSpec, make_cohort


@pytest.mark.parametrize("spatial", [(32, 32), (12, 16, 16)])
def test_ssim_matches_monai(spatial):
    from monai.metrics import SSIMMetric

    g = torch.Generator().manual_seed(len(spatial))
    x = make_cohort(CohortSpec(6, image_size=spatial[-1]), 1)["image"]
    if len(spatial) == 3:
        x = x.unsqueeze(2).expand(-1, -1, spatial[0], -1, -1) + 0.1 * torch.randn(6, 1, *spatial, generator=g)
    y = x + 0.7 * torch.randn(x.shape, generator=g)
    rng = float(x.max() - x.min())
    ref = SSIMMetric(spatial_dims=len(spatial), data_range=rng, kernel_type="gaussian", win_size=11,
                     kernel_sigma=1.5)(y, x).reshape(-1)
    ours = ssim(x, y, rng)
    assert torch.allclose(ours, ref.float(), atol=1e-4), (ours, ref)
    assert torch.allclose(ssim(x, x, rng), torch.ones(6), atol=1e-6)
    assert float(ssim(x, torch.randn(x.shape, generator=g), rng).mean()) < 0.1


def test_psnr_r2_and_roc():
    assert psnr(0.01, 1.0) == pytest.approx(20.0)
    assert math.isinf(psnr(0.0, 1.0))
    x = torch.randn(50, 4, dtype=torch.float64)
    assert torch.allclose(r2_per_feature(x, x), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(r2_per_feature(x, x.mean(0).expand_as(x)), torch.zeros(4, dtype=torch.float64))
    rng = np.random.default_rng(0)
    y = rng.random(200) > 0.6
    s = y + rng.normal(0, 1.0, 200)
    fpr, tpr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s))
    assert leak_auc(y, -s) == pytest.approx(roc_auc(y, s))  # the attacker's better orientation
    assert leak_auc(y, -s, either_way=False) == pytest.approx(1 - roc_auc(y, s))
