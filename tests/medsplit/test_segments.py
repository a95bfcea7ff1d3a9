"""Segment builders and splitting a user's nn.Sequential."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsplit import cnn_body, cnn_encoder, head, mlp_encoder, split_sequential
from medsplit.errors import TopologyError


@pytest.mark.parametrize("shape,expected", [((1, 32, 32), (16, 8, 8)), ((1, 16, 32, 32), (16, 4, 8, 8))])
def test_cnn_encoder_2d_and_3d(shape, expected):
    enc = cnn_encoder(1, (8, 16), spatial_dims=len(shape) - 1)
    assert tuple(enc(torch.zeros(2, *shape)).shape[1:]) == expected
    pooled = cnn_encoder(1, (8, 16), spatial_dims=len(shape) - 1, out_features=24)
    assert tuple(pooled(torch.zeros(2, *shape)).shape[1:]) == (24,)
    body = cnn_body(16, (32,), spatial_dims=len(shape) - 1, out_features=10)
    assert tuple(body(torch.zeros(2, *expected)).shape[1:]) == (10,)


def test_mlp_encoder_and_head():
    enc = mlp_encoder(12, (64,), 16)
    z = enc(torch.randn(5, 12))
    assert z.shape == (5, 16) and (z >= 0).all()  # the cut ends in a ReLU
    assert head(16, 3)(z).shape == (5, 3)


def test_split_sequential_shares_modules_and_composes():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    a, b, c = split_sequential(model, [2, 4])
    x = torch.randn(3, 4)
    assert torch.equal(c(b(a(x))), model(x))
    assert a[0] is model[0] and len(a) == 2 and len(b) == 2 and len(c) == 1


@pytest.mark.parametrize("cuts", [[0], [5], [3, 2], [2, 2]])
def test_split_sequential_refuses_bad_cuts(cuts):
    model = nn.Sequential(*[nn.Identity() for _ in range(5)])
    with pytest.raises(TopologyError, match="strictly increasing and inside"):
        split_sequential(model, cuts)
