"""Transform chains on small synthetic images: windowing, shapes, orientation, rank, seeded augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from data_adapters.report import Rejected
from data_adapters.transforms import (
    MatchRank,
    Reorient,
    build_transforms,
    default_pipeline,
)
from medsplit.errors import ConfigError

LPS_2D = torch.tensor([[-1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], dtype=torch.float64)


def image(values: np.ndarray, affine: torch.Tensor | None = None) -> MetaTensor:
    """Channel-first MetaTensor in MONAI's (C, X, Y[, Z]) order with an identity (RAS) affine."""
    return MetaTensor(torch.as_tensor(values, dtype=torch.float32)[None],
                      affine=affine if affine is not None else torch.eye(4, dtype=torch.float64))


def run(modality, size, x, pipeline=None, **kw):
    return build_transforms("image", modality, size, pipeline, load=False, **kw)({"image": x})["image"]


def test_ct_hounsfield_window_maps_to_unit_range():
    hu = np.full((16, 16), 40.0)
    hu[:4] = -2000.0  # below the window: clipped to 0
    hu[-4:] = 3000.0  # above: clipped to 1
    out = run("CT", (16, 16), image(hu), dataclasses.replace(default_pipeline("CT"), orientation=None))
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (1, 16, 16)
    assert out.min().item() == 0.0 and out.max().item() == 1.0
    assert torch.isclose(out[0, 8, 8], torch.tensor((40.0 + 1000.0) / 1400.0))


@pytest.mark.parametrize("resize", ["letterbox", "stretch", "pad_crop"])
@pytest.mark.parametrize("size,src", [((24, 20), (50, 37)), ((4, 16, 12), (30, 22, 7))])
def test_output_has_exactly_the_configured_shape(resize, size, src):
    x = image(np.random.default_rng(0).normal(0, 100, src))
    p = dataclasses.replace(default_pipeline("MR"), resize=resize)
    out = run("MR", size, x, p)
    assert tuple(out.shape) == (1, *size)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_output_order_is_depth_height_width():
    # MONAI order (X=4, Y=5, Z=3) must come out as (D=3, H=5, W=4)
    x = np.arange(60, dtype=np.float32).reshape(4, 5, 3)
    p = dataclasses.replace(default_pipeline("CT"), window=(0.0, 59.0), orientation=None, resize="pad_crop")
    out = run("CT", (3, 5, 4), image(x), p)
    assert out.shape == (1, 3, 5, 4)
    assert torch.allclose(out[0] * 59.0, torch.as_tensor(x).permute(2, 1, 0), atol=1e-4)


def test_percentile_scaling_of_a_constant_image_is_finite():
    out = run("DX", (8, 8), image(np.full((10, 10), 7.0)))
    assert torch.isfinite(out).all()


def test_nan_input_is_rejected_not_passed_on():
    x = np.zeros((8, 8))
    x[2, 2] = np.nan
    p = dataclasses.replace(default_pipeline("CT"), orientation=None)
    with pytest.raises(RuntimeError) as info:  # MONAI wraps transform errors; the cause is ours
        run("CT", (8, 8), image(x), dataclasses.replace(p, window=None, percentiles=None))
    cause = info.value
    while cause is not None and not isinstance(cause, Rejected):
        cause = cause.__cause__
    assert cause is not None and cause.reason == "non_finite"


def test_reorient_flips_lps_data_and_affine_to_ras():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = Reorient("RAS")(image(x, LPS_2D))
    assert torch.equal(out.as_tensor()[0], torch.as_tensor(x).flip(0).flip(1))
    assert (torch.diagonal(out.affine)[:2] > 0).all()
    # the voxel that was at index (0, 0) is still at the same world position
    assert torch.allclose(out.affine @ torch.tensor([2.0, 3.0, 0, 1], dtype=torch.float64),
                          LPS_2D @ torch.tensor([0.0, 0.0, 0, 1], dtype=torch.float64))


def test_reorient_permutes_swapped_axes():
    swapped = torch.tensor([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], dtype=torch.float64)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = Reorient("RAS")(image(x, swapped))
    assert out.shape == (1, 3, 2)
    assert torch.equal(out.as_tensor()[0], torch.as_tensor(x).T)


def test_volume_for_a_2d_model_gives_its_middle_slice():
    vol = np.stack([np.full((6, 6), k, np.float32) for k in range(5)], axis=-1)
    out = MatchRank(2)(image(vol))
    assert out.shape == (1, 6, 6) and torch.all(out == 2)


def test_2d_image_for_a_3d_model_is_rejected():
    with pytest.raises(Rejected) as info:
        MatchRank(3)(image(np.zeros((6, 6))))
    assert info.value.reason == "unsupported"


def test_training_augmentation_is_seeded_and_eval_is_deterministic():
    x = image(np.random.default_rng(1).normal(0, 300, (32, 32)))
    p = dataclasses.replace(default_pipeline("CT"), orientation=None)
    a = [run("CT", (32, 32), x.clone(), p, train=True, seed=3) for _ in range(2)]
    b = run("CT", (32, 32), x.clone(), p, train=True, seed=4)
    e1, e2 = (run("CT", (32, 32), x.clone(), p, train=False) for _ in range(2))
    assert torch.equal(a[0], a[1])
    assert not torch.equal(a[0], b)
    assert torch.equal(e1, e2)
    assert a[0].shape == e1.shape == (1, 32, 32) and a[0].dtype == torch.float32


def test_augmentation_changes_samples_across_draws():
    x = image(np.random.default_rng(2).normal(0, 300, (32, 32)))
    p = dataclasses.replace(default_pipeline("CT"), orientation=None)
    chain = build_transforms("image", "CT", (32, 32), p, load=False, train=True, seed=0)
    draws = [chain({"image": x.clone()})["image"] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_modality_defaults():
    assert default_pipeline("CT").window == (-1000.0, 400.0)
    assert default_pipeline("MR").percentiles == (0.5, 99.5) and default_pipeline("MR").window is None
    assert default_pipeline("DX").augment.flip_prob == 0.0  # laterality matters in radiographs
    with pytest.raises(ConfigError, match="no default pipeline"):
        default_pipeline("US")
