"""Split training gives the same parameters as the same model trained in one process."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medsplit import Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential
from medsplit.data import batch_order
from medsplit.topology.segments import cnn_body, cnn_encoder, head, mlp, mlp_encoder

STEPS_ROWS, BATCH, SEED = 96, 16, 3  # 6 optimizer steps per epoch, 2 epochs


def _cohort(n: int = STEPS_ROWS, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 1, 16, 16, generator=g), "ehr": torch.randn(n, 6, generator=g),
            "y": (torch.rand(n, generator=g) > 0.5).float(), "z": (torch.rand(n, generator=g) > 0.5).float()}


def _optimizers():
    return {
        "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    }


def _train_unsplit(model: nn.Module, loss_fn, cohort: dict, opt_factory, epochs: int) -> None:
    opt = opt_factory(model.parameters())
    for epoch in range(epochs):
        for idx in batch_order(len(cohort["y"]), BATCH, SEED, epoch):
            batch = {k: v[idx] for k, v in cohort.items()}
            opt.zero_grad()
            loss_fn(model, batch).backward()
            opt.step()


def _assert_same(split: nn.Module, reference: nn.Module, initial: nn.Module) -> None:
    """Split-trained parameters equal the unsplit ones, and both moved away from where they started
    (equal parameters that never trained would prove nothing)."""
    names = [n for n, _ in split.named_parameters()]
    assert names and names == [n for n, _ in reference.named_parameters()]
    for (name, p), q in zip(split.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"{name} differs")
    # Every weight trains (a convolution's bias before batch norm gets no gradient, so biases may not).
    still = [n for (n, p), p0 in zip(split.named_parameters(), initial.parameters(), strict=True)
             if n.endswith("weight") and torch.equal(p, p0)]
    assert not still, f"weights that never trained: {still}"


def _bce(pred, y):
    return nn.functional.binary_cross_entropy_with_logits(pred.reshape(-1), y)


def _full_cnn() -> nn.Sequential:
    return nn.Sequential(*cnn_encoder(1, (4, 8)), *cnn_body(8, (8,), 2, 8), *head(8))


@pytest.mark.parametrize("opt_name", list(_optimizers()))
def test_vanilla_equals_unsplit(opt_name):
    cohort = _cohort()
    full = _full_cnn()
    reference, initial = copy.deepcopy(full), copy.deepcopy(full)
    site_part, server_part = split_sequential(full, [2])
    topo = Topology("vanilla", [Party("site", data={"image": (1, 16, 16)}, labels=("y",)), Party("server", "server")],
                    [Segment("site.enc", "site", site_part, ("data:image",)),
                     Segment("server.rest", "server", server_part, ("site.enc",))],
                    [Task("t", "server.rest", "y", share_labels=True)])
    data = {"site": SiteData(TensorTable({k: cohort[k] for k in ("image", "y")}), TensorTable(
        {k: cohort[k][:8] for k in ("image", "y")}))}
    opt = _optimizers()[opt_name]
    trainer = SplitTrainer(topo, data, optimizer=opt, batch_size=BATCH, seed=SEED)
    trainer.train_epoch()
    trainer.train_epoch()
    _train_unsplit(reference, lambda m, b: _bce(m(b["image"]), b["y"]), cohort, opt, epochs=2)
    _assert_same(full, reference, initial)


@pytest.mark.parametrize("opt_name", list(_optimizers()))
def test_ushaped_equals_unsplit(opt_name):
    cohort = _cohort()
    full = nn.Sequential(*cnn_encoder(1, (4, 8)), *cnn_body(8, (8,), 2, 8), *head(8))
    reference, initial = copy.deepcopy(full), copy.deepcopy(full)
    head_part, body_part, tail_part = split_sequential(full, [2, len(full) - 1])
    topo = Topology("u", [Party("site", data={"image": (1, 16, 16)}, labels=("y",)), Party("server", "server")],
                    [Segment("site.head", "site", head_part, ("data:image",)),
                     Segment("server.body", "server", body_part, ("site.head",)),
                     Segment("site.tail", "site", tail_part, ("server.body",))],
                    [Task("t", "site.tail", "y")])
    data = {"site": SiteData(TensorTable({k: cohort[k] for k in ("image", "y")}),
                             TensorTable({k: cohort[k][:8] for k in ("image", "y")}))}
    opt = _optimizers()[opt_name]
    trainer = SplitTrainer(topo, data, optimizer=opt, batch_size=BATCH, seed=SEED)
    trainer.train_epoch()
    trainer.train_epoch()
    _train_unsplit(reference, lambda m, b: _bce(m(b["image"]), b["y"]), cohort, opt, epochs=2)
    _assert_same(full, reference, initial)


@pytest.mark.parametrize("executor", ["sequential", "threaded"])
def test_multihop_equals_unsplit(executor):
    cohort = _cohort()
    full = nn.Sequential(*cnn_encoder(1, (4, 8)), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), *cnn_body(8, (8,), 2, 8), *head(8))
    reference, initial = copy.deepcopy(full), copy.deepcopy(full)
    pieces = split_sequential(full, [2, 4, 6])
    parties = [Party("site", data={"image": (1, 16, 16)}, labels=("y",)), Party("hop1", "hop"),
               Party("hop2", "hop"), Party("server", "server")]
    names = ["site.enc", "hop1.seg", "hop2.seg", "server.rest"]
    segs = [Segment(names[0], "site", pieces[0], ("data:image",))]
    segs += [Segment(names[i], parties[i].name, pieces[i], (names[i - 1],)) for i in range(1, 4)]
    topo = Topology("hops", parties, segs, [Task("t", "server.rest", "y", share_labels=True)])
    data = {"site": SiteData(TensorTable({k: cohort[k] for k in ("image", "y")}),
                             TensorTable({k: cohort[k][:8] for k in ("image", "y")}))}
    opt = _optimizers()["adam"]
    trainer = SplitTrainer(topo, data, optimizer=opt, batch_size=BATCH, seed=SEED, executor=executor)
    trainer.train_epoch()
    trainer.train_epoch()
    _train_unsplit(reference, lambda m, b: _bce(m(b["image"]), b["y"]), cohort, opt, epochs=2)
    _assert_same(full, reference, initial)


class _TwoModal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.img = cnn_encoder(1, (4, 8), 2, out_features=8)
        self.ehr = mlp_encoder(6, (8,), 4)
        self.trunk = mlp(12, (), 8, final_activation=True)
        self.dx = head(8)
        self.mort = head(8)

    def forward(self, b):
        z = self.trunk(torch.cat([self.img(b["image"]), self.ehr(b["ehr"])], dim=1))
        return self.dx(z), self.mort(z)


def test_vertical_ushaped_multitask_equals_unsplit():
    """Two modalities at two sites, merged at the server, two tasks whose tails stay at the labels' site."""
    cohort = _cohort()
    full = _TwoModal()
    reference, initial = copy.deepcopy(full), copy.deepcopy(full)
    topo = Topology("vu", [Party("imaging", data={"image": (1, 16, 16)}),
                           Party("ehr", data={"ehr": (6,)}, labels=("y", "z")), Party("server", "server")],
                    [Segment("imaging.enc", "imaging", full.img, ("data:image",)),
                     Segment("ehr.enc", "ehr", full.ehr, ("data:ehr",)),
                     Segment("server.trunk", "server", full.trunk, ("imaging.enc", "ehr.enc")),
                     Segment("ehr.dx", "ehr", full.dx, ("server.trunk",)),
                     Segment("ehr.mort", "ehr", full.mort, ("server.trunk",))],
                    [Task("dx", "ehr.dx", "y"), Task("mort", "ehr.mort", "z")])
    data = {"imaging": SiteData(TensorTable({"image": cohort["image"]}), TensorTable({"image": cohort["image"][:8]})),
            "ehr": SiteData(TensorTable({k: cohort[k] for k in ("ehr", "y", "z")}),
                            TensorTable({k: cohort[k][:8] for k in ("ehr", "y", "z")}))}
    opt = _optimizers()["sgd_momentum"]
    trainer = SplitTrainer(topo, data, optimizer=opt, batch_size=BATCH, seed=SEED)
    trainer.train_epoch()
    trainer.train_epoch()

    def loss(m, b):
        dx, mort = m(b)
        return _bce(dx, b["y"]) + _bce(mort, b["z"])

    _train_unsplit(reference, loss, cohort, opt, epochs=2)
    _assert_same(full, reference, initial)
    # The server's trunk output went back to the ehr site, one cut edge per tail.
    edges = {r["edge"] for r in trainer.meter.audit()}
    assert {"server.trunk->ehr.dx", "server.trunk->ehr.mort"} <= edges


def test_threaded_executor_is_bit_identical_to_sequential():
    from medsplit import PresetConfig, build_preset, preset_data

    results = []
    for executor in ("sequential", "threaded"):
        torch.manual_seed(1)
        cfg = PresetConfig(image_shape=(1, 16, 16))
        topo = build_preset("vertical", cfg)
        trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=1, patients=64), batch_size=16, seed=1,
                               executor=executor)
        trainer.train_epoch()
        results.append(trainer.state_dicts())
    for seg, state in results[0].items():
        for k, v in state.items():
            assert torch.equal(v, results[1][seg][k]), f"{seg}.{k}"
