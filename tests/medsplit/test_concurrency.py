"""Concurrent sites do not corrupt the server: steps are serialised there in a fixed order."""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch
from torch import nn

from medsplit import PresetConfig, SplitTrainer, build_preset, preset_data

pytestmark = pytest.mark.slow


class _Jitter(nn.Module):
    """Wraps a site segment and sleeps a random time, so sites reach the server in a random order."""

    def __init__(self, inner: nn.Module, rng: random.Random, log: list, name: str) -> None:
        super().__init__()
        self.inner, self.rng, self.log, self.name = inner, rng, log, name

    def forward(self, x):
        time.sleep(self.rng.uniform(0, 0.01))
        self.log.append((self.name, threading.current_thread().name, time.monotonic()))
        return self.inner(x)


def _splitfed(executor: str, jitter: bool, log: list):
    torch.manual_seed(7)
    cfg = PresetConfig(image_shape=(1, 16, 16), sites=3)
    topo = build_preset("splitfed", cfg)
    if jitter:
        rng = random.Random(1)
        for seg in topo.segments:
            if seg.party != "server":
                seg.module = _Jitter(seg.module, rng, log, seg.party)
    trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=7, patients=96), batch_size=16, seed=7,
                           executor=executor)
    trainer.fit(2)
    return trainer


def test_concurrent_sites_give_the_sequential_result():
    log: list = []
    reference = _splitfed("sequential", jitter=False, log=[])
    concurrent = _splitfed("threaded", jitter=True, log=log)
    # The sites really ran on their own threads, and overlapped.
    threads = {t for _, t, _ in log if t.startswith("medsplit-")}  # the rest is the shape check at compile
    assert threads == {"medsplit-hospital_1", "medsplit-hospital_2", "medsplit-hospital_3"}
    server = reference.plan.segments["server.head"].module
    other = concurrent.plan.segments["server.head"].module
    for (name, p), q in zip(server.named_parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert reference.history[-1].metrics == concurrent.history[-1].metrics


def test_server_state_is_per_step_and_dropped_after_update():
    trainer = _splitfed("threaded", jitter=False, log=[])
    for runner in trainer.runners.values():
        assert runner._state == {}, f"{runner.name} kept step state: {list(runner._state)}"
    assert trainer.transport.pending() == 0


def test_interleaving_sites_at_the_server_would_break_autograd():
    """Why the server serialises steps: update between A's forward and backward, and A's backward fails."""
    torch.manual_seed(0)
    server = nn.Linear(4, 1)
    opt = torch.optim.SGD(server.parameters(), lr=0.1)
    act_a = torch.randn(8, 4, requires_grad=True)
    act_b = torch.randn(8, 4, requires_grad=True)
    loss_a = server(act_a).pow(2).mean()  # site A's forward at the server
    server(act_b).pow(2).mean().backward()  # site B's whole step in between...
    opt.step()  # ...including the update
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss_a.backward()
