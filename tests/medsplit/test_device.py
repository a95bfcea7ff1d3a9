"""Parties on devices: each party's segments compute where its ``device`` says; tensors cross as CPU bytes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medsplit import ConfigError, Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential

CUDA = torch.cuda.is_available()


def _vanilla(server_device: str = "cpu", site_device: str = "cpu") -> tuple[Topology, dict, nn.Module]:
    torch.manual_seed(0)
    full = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))
    site, server = split_sequential(full, [2])
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 12, generator=g), (torch.rand(64, generator=g) > 0.5).float()
    topo = Topology("v", [Party("site", data={"x": (12,)}, labels=("y",), device=site_device),
                          Party("server", "server", device=server_device)],
                    [Segment("site.enc", "site", site, ("data:x",)),
                     Segment("server.rest", "server", server, ("site.enc",))],
                    [Task("t", "server.rest", "y", share_labels=True)])
    data = {"site": SiteData(TensorTable({"x": x, "y": y}), TensorTable({"x": x[:16], "y": y[:16]}))}
    return topo, data, full


def test_a_device_this_machine_lacks_is_refused_naming_the_party_and_the_fix():
    topo, data, _ = _vanilla(server_device=f"cuda:{torch.cuda.device_count() + 7}" if CUDA else "cuda")
    with pytest.raises(ConfigError, match=r"party 'server' is to compute on cuda.*\n  fix: run 'server' on a machine"):
        SplitTrainer(topo, data, batch_size=16)
    topo, data, _ = _vanilla(site_device="gpu0")
    with pytest.raises(ConfigError, match="(?s)party 'site' names device 'gpu0'.*use cpu, cuda or cuda:N"):
        SplitTrainer(topo, data, batch_size=16)


@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
@pytest.mark.parametrize("transport", ["local", "gloo"])
def test_a_server_on_the_gpu_trains_as_on_the_cpu(transport):
    results = []
    for device in ("cpu", "cuda"):
        topo, data, full = _vanilla(server_device=device)
        trainer = SplitTrainer(topo, data, batch_size=16, transport=transport,
                               optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        trainer.fit(2)
        assert next(full[2].parameters()).device.type == device and next(full[0].parameters()).device.type == "cpu"
        results.append((copy.deepcopy(full).cpu(), trainer.history[-1].metrics["t"]["val_loss"]))
    (cpu_model, cpu_loss), (gpu_model, gpu_loss) = results
    for p, q in zip(cpu_model.parameters(), gpu_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert gpu_loss == pytest.approx(cpu_loss, abs=1e-4)
