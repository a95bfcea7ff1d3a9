"""AUC and task metrics against brute-force definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from medsplit.engine.metrics import roc_auc, task_loss, task_metrics


def _brute_auc(y, s):
    pos = [si for yi, si in zip(y, s, strict=True) if yi]
    neg = [si for yi, si in zip(y, s, strict=True) if not yi]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
    assert roc_auc(y, s) == pytest.approx(_brute_auc(y, s), abs=1e-12)


def test_auc_edge_cases():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_task_metrics_by_kind():
    logits = torch.tensor([[2.0], [-2.0], [1.0], [-1.0]])
    y = torch.tensor([1.0, 0.0, 0.0, 0.0])
    m = task_metrics("bce", [logits[:2], logits[2:]], [y[:2], y[2:]])
    assert m["val_auc"] == 1.0 and m["val_acc"] == 0.75 and m["n"] == 4
    assert m["val_loss"] == pytest.approx(float(task_loss("bce", logits, y)))
    ce = task_metrics("ce", [torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])], [torch.tensor([0, 1])])
    assert ce["val_acc"] == 0.5
    mse = task_metrics("mse", [torch.ones(3, 2)], [torch.zeros(3, 2)])
    assert mse["val_mse"] == 1.0
