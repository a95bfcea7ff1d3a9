"""The defenses' own contracts: clipping bounds, noise scale, NoPeek's pull, Marvell's optimum, placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsplit import PresetConfig, build_preset
from medsplit.errors import ConfigError, DataError
from medsplit.topology import Clip, GaussianNoise, Marvell, MaxNorm, NoPeek, defend, make_defense
from medsplit.topology.defenses import distance_correlation, marvell_covariances
from medsplit.topology.defenses.labels import _sym_kl


def test_clip_bounds_each_patient_and_leaves_small_ones():
    x = torch.cat([torch.randn(4, 3, 5, 5) * 10, torch.randn(4, 3, 5, 5) * 0.01])
    out = Clip(1.0).activation(x, train=True)
    norms = out.reshape(8, -1).norm(dim=1)
    assert torch.all(norms <= 1.0 + 1e-5) and torch.allclose(norms[:4], torch.ones(4), atol=1e-5)
    assert torch.equal(out[4:], x[4:])


def test_noise_is_sized_by_the_cut_and_scale_free():
    torch.manual_seed(0)
    x = torch.randn(256, 64)
    for scale in (0.01, 100.0):
        out = GaussianNoise(0.5).activation(scale * x, train=False)
        ratio = float((out - scale * x).std() / (scale * x).pow(2).mean().sqrt())
        assert ratio == pytest.approx(0.5, rel=0.05)


def test_nopeek_relative_pull_is_alpha_times_the_task_gradient():
    torch.manual_seed(0)
    raw, cut, task = torch.randn(32, 10), torch.randn(32, 6), torch.randn(32, 6) * 1e-3
    for alpha in (0.5, 2.0):
        extra = NoPeek(alpha).cut_gradient(raw, cut, task) - task
        assert float(extra.norm()) == pytest.approx(alpha * float(task.norm()), rel=1e-5)
    # absolute: the paper's loss, task + alpha * dCor, whose gradient does not care how small the task's is
    z = cut.clone().requires_grad_(True)
    (0.5 * distance_correlation(raw, z)).backward()
    assert torch.allclose(NoPeek(0.5, "absolute").cut_gradient(raw, cut, task), task + z.grad, atol=1e-6)
    with pytest.raises(ConfigError, match="scale"):
        NoPeek(0.5, "log")  # type: ignore[arg-type]


def test_marvell_spends_its_budget_where_it_hides_the_labels_best():
    u, v, d, g, p, power = 0.02, 0.05, 16, 1.0, 0.3, 2.0
    l10, l20, l11, l21 = marvell_covariances(u, v, d, g, p, power)
    assert p * (l11 + (d - 1) * l21) + (1 - p) * (l10 + (d - 1) * l20) == pytest.approx(power, rel=1e-6)
    best = _sym_kl(l10, l20, l11, l21, u, v, d, g)
    iso = power / d  # the same power spread evenly over every direction, for both classes
    assert best < _sym_kl(iso, iso, iso, iso, u, v, d, g)
    rng = np.random.default_rng(0)
    for _ in range(200):  # no random split of the budget does better than the grid's
        s = rng.dirichlet(np.ones(4))
        cand = (s[0] * power / (1 - p), s[1] * power / ((1 - p) * (d - 1)), s[2] * power / p,
                s[3] * power / (p * (d - 1)))
        assert best <= _sym_kl(*cand, u, v, d, g) * (1 + 1e-3)


def test_label_defenses_refuse_what_they_cannot_protect():
    g = torch.randn(8, 4)
    with pytest.raises(DataError, match="binary"):
        Marvell().label_gradient(g, torch.arange(8.0))
    with pytest.raises(ConfigError, match="labels"):
        Marvell().label_gradient(g, None)
    out = MaxNorm().label_gradient(g, None)  # label-free: works for any task
    assert out.shape == g.shape and not torch.equal(out, g)
    with pytest.raises(ConfigError, match="unknown defense 'marvel'.*marvell"):
        make_defense("marvel")
    with pytest.raises(ConfigError, match="strength"):
        make_defense("noise")


def test_defend_places_each_defense_where_it_acts():
    topo = build_preset("vertical", PresetConfig(ushaped=True))
    out = defend(topo, {"ehr": [NoPeek(1.0), Marvell(2.0)], "imaging": [GaussianNoise(0.5)]})
    got = {s.name: [d.describe() for d in s.defenses] for s in out.segments}
    assert got == {"imaging.encoder": ["noise(sigma=0.5)"], "ehr.encoder": ["nopeek(alpha=1)"],
                   "server.trunk": [], "ehr.tail": ["marvell(strength=2)"]}
    assert all(not s.defenses for s in topo.segments)  # the original is untouched
    with pytest.raises(ConfigError, match="(?s)no place at site 'hospital'.*clear"):
        defend(build_preset("vanilla"), {"hospital": [Marvell()]})
    with pytest.raises(ConfigError, match="not a site"):
        defend(topo, {"server": [NoPeek(1.0)]})
