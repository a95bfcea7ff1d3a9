"""Pipelined steps (micro-batches): the plain schedule's parameters where the method allows, in an order that
lets a site compute its next micro-batch while the last one crosses."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medsplit import Kind, Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential
from medsplit.plan import compile_topology
from medsplit.topology.segments import mlp

ROWS, BATCH = 90, 16  # 6 steps an epoch; the last has 10 rows (micro-batches of 4, 3 and 3 when split in 3)


def _cohort(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(ROWS, 1, 8, 8, generator=g), "ehr": torch.randn(ROWS, 5, generator=g),
            "y": (torch.rand(ROWS, generator=g) > 0.5).float(), "z": (torch.rand(ROWS, generator=g) > 0.5).float()}


def _cnn() -> nn.Sequential:
    """No batch norm: each sample's loss depends on that sample only, so micro-batches change nothing."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 1))


def _site(cohort, keys, val=8):
    return SiteData(TensorTable({k: cohort[k] for k in keys}), TensorTable({k: cohort[k][:val] for k in keys}))


def vanilla() -> tuple[Topology, dict, nn.Module]:
    full = _cnn()
    site, server = split_sequential(full, [4])
    topo = Topology("v", [Party("site", data={"image": (1, 8, 8)}, labels=("y",)), Party("server", "server")],
                    [Segment("site.enc", "site", site, ("data:image",)),
                     Segment("server.rest", "server", server, ("site.enc",))],
                    [Task("t", "server.rest", "y", share_labels=True)])
    return topo, {"site": _site(_cohort(), ("image", "y"))}, full


def ushaped() -> tuple[Topology, dict, nn.Module]:
    full = _cnn()
    head, body, tail = split_sequential(full, [2, 7])
    topo = Topology("u", [Party("site", data={"image": (1, 8, 8)}, labels=("y",)), Party("server", "server")],
                    [Segment("site.head", "site", head, ("data:image",)),
                     Segment("server.body", "server", body, ("site.head",)),
                     Segment("site.tail", "site", tail, ("server.body",))], [Task("t", "site.tail", "y")])
    return topo, {"site": _site(_cohort(), ("image", "y"))}, full


def vertical() -> tuple[Topology, dict, nn.Module]:
    """Two sites (fingerprints checked once a step), a merge, two tasks whose labels stay at the EHR site."""
    torch.manual_seed(0)
    parts = nn.ModuleDict({"img": nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU()), "ehr": mlp(5, (6,), 4),
                           "trunk": mlp(10, (), 8, final_activation=True), "dx": mlp(8, (), 1), "mort": mlp(8, (), 1)})
    cohort = _cohort()
    topo = Topology("vu", [Party("imaging", data={"image": (1, 8, 8)}),
                           Party("ehr", data={"ehr": (5,)}, labels=("y", "z")), Party("server", "server")],
                    [Segment("imaging.enc", "imaging", parts["img"], ("data:image",)),
                     Segment("ehr.enc", "ehr", parts["ehr"], ("data:ehr",)),
                     Segment("server.trunk", "server", parts["trunk"], ("imaging.enc", "ehr.enc")),
                     Segment("ehr.dx", "ehr", parts["dx"], ("server.trunk",)),
                     Segment("ehr.mort", "ehr", parts["mort"], ("server.trunk",))],
                    [Task("dx", "ehr.dx", "y"), Task("mort", "ehr.mort", "z", weight=0.5)])
    ids = [f"p{i}" for i in range(ROWS)]
    data = {"imaging": SiteData(TensorTable({"image": cohort["image"]}, ids),
                                TensorTable({"image": cohort["image"][:8]})),
            "ehr": SiteData(TensorTable({k: cohort[k] for k in ("ehr", "y", "z")}, ids),
                            TensorTable({k: cohort[k][:8] for k in ("ehr", "y", "z")}))}
    return topo, data, parts


def splitfed() -> tuple[Topology, dict, nn.Module]:
    full = _cnn()
    sites = ["h1", "h2"]
    encs = [Segment(f"{s}.enc", s, copy.deepcopy(split_sequential(full, [4])[0]), ("data:image",)) for s in sites]
    server = Segment("server.rest", "server", split_sequential(full, [4])[1], tuple(e.name for e in encs),
                     merge="route")
    topo = Topology("sf", [*(Party(s, data={"image": (1, 8, 8)}, labels=("y",)) for s in sites),
                           Party("server", "server")],
                    encs + [server], [Task("t", "server.rest", "y", share_labels=True)], schedule="parallel",
                    replicas=[tuple(e.name for e in encs)], aggregator="server")
    return topo, {s: _site(_cohort(i + 1), ("image", "y")) for i, s in enumerate(sites)}, nn.ModuleList(
        [e.module for e in encs] + [server.module])


def _train(build, micro_batches: int, executor: str = "sequential", epochs: int = 2):
    topo, data, model = build()
    initial = copy.deepcopy(model)
    trainer = SplitTrainer(topo, data, batch_size=BATCH, seed=4, executor=executor, micro_batches=micro_batches,
                           optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    losses = [trainer.train_epoch() for _ in range(epochs)]
    return model, initial, losses, trainer


@pytest.mark.parametrize("build", [vanilla, ushaped, vertical, splitfed], ids=lambda f: f.__name__)
def test_pipelined_steps_give_the_plain_schedules_parameters(build):
    plain, initial, plain_losses, _ = _train(build, 1)
    piped, _, piped_losses, trainer = _train(build, 3)
    assert trainer.schedule.micro_batches == 3
    moved = False
    for (name, p), q, p0 in zip(piped.named_parameters(), plain.parameters(), initial.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"{name} differs")
        moved |= not torch.equal(q, p0)
    assert moved  # equal parameters that never trained would prove nothing
    for a, b in zip(piped_losses, plain_losses, strict=True):
        assert a.keys() == b.keys() and all(abs(a[t] - b[t]) < 1e-6 for t in a)


def test_pipelined_threads_equal_pipelined_lockstep_exactly():
    """Each party runs its ops in the same order whether the parties share a thread or not."""
    a, *_ = _train(vertical, 4, "sequential", epochs=1)
    b, *_ = _train(vertical, 4, "threaded", epochs=1)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_micro_batches_with_batch_norm_run_but_normalise_per_micro_batch():
    """What the method does not allow: batch norm sees each micro-batch's rows, so the numbers move."""
    def bn():
        topo, data, full = vanilla()
        full.insert(1, nn.BatchNorm2d(4))
        site, server = split_sequential(full, [5])
        topo.segments[0].module, topo.segments[1].module = site, server
        return topo, data, full

    plain, *_ = _train(bn, 1, epochs=1)
    piped, *_ = _train(bn, 2, epochs=1)
    assert not all(torch.allclose(p, q, atol=1e-6) for p, q in zip(plain.parameters(), piped.parameters(), strict=True))


def test_a_pipelined_step_overlaps_a_sites_forwards_with_the_server():
    """The site sends every micro-batch's activations before it waits for the first gradient; the server
    answers each in order; every receive follows its send in the global order (no party waits on a later op)."""
    topo, _, _ = vanilla()
    plan = compile_topology(topo)
    ops = plan.step_ops(["site"], "train", micro_batches=3)
    site = [(op.action, op.kind, op.micro) for op in ops if op.party == "site"]
    sends = [i for i, (a, k, _) in enumerate(site) if a == "send" and k is Kind.ACTIVATION]
    first_wait = next(i for i, (a, k, _) in enumerate(site) if a == "recv")
    assert len(sends) == 3 and max(sends) < first_wait
    assert [m for a, k, m in site if a == "recv"] == [0, 1, 2]
    assert [op.action for op in ops if op.party == "site"][-1] == "update"
    assert sum(op.action == "update" for op in ops) == 2  # one per party, after every micro-batch
    for i, op in enumerate(ops):
        if op.action == "recv":
            assert any(o.action == "send" and (o.target, o.kind, o.micro) == (op.target, op.kind, op.micro)
                       for o in ops[:i])
    assert plan.step_ops(["site"], "eval", micro_batches=3) == plan.step_ops(["site"], "eval")


def test_micro_batches_are_messages_of_their_own():
    _, _, _, trainer = _train(vanilla, 2, epochs=1)
    micro = [r for r in trainer.meter.audit() if r["kind"] == "activation"]
    assert micro[0]["count"] == 2 * 6  # two per training step


def test_a_micro_batch_has_two_rows_or_more():
    """Batch norm and dCor need two rows: a short last batch is split less (or not at all)."""
    from medsplit.plan import Schedule

    topo, _, _ = vanilla()
    schedule = Schedule(compile_topology(topo), {"site": (19, 2)}, 8, 0, shuffle=False, micro_batches=4)
    assert [u.micro_batches for (u,) in schedule.train_epoch(0)] == [4, 4, 1]  # rows 8, 8, 3
