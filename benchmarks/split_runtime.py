"""What splitting costs: the same CT-sized CNN and data, trained unsplit, split in-process, and split over gloo/rpc.

For a fixed number of steps, in one run of this script:
  (a) unsplit, one process;  (b) split, local transport (one process);
  (c) split, a site process and a server process over gloo;  (d) the same over rpc.
Reports steps per second, each mode's time per step as a ratio to (a), bytes per step against the analytic
size of the cut activations, gradients and labels, and peak resident memory per process.

    PYTHONPATH=. .venv/bin/python benchmarks/split_runtime.py --steps 30 --size 256 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import socket
import time
from pathlib import Path

import torch
from torch import nn

from medsplit import Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential
from medsplit.engine.metrics import task_loss
from medsplit.engine.party import PartyRunner, Unit
from medsplit.plan import Schedule, compile_topology
from medsplit.topology import conv_block
from medsplit.transport import NameTable, node_transport
from medsplit.transport.secure import Trust
from medsplit.wire import Meter, Wire

CUT = 2
WARMUP = 3


def ct_model() -> nn.Sequential:
    """A CNN for one CT slice (1 x S x S): two strided convolutions at the site, five more at the server."""
    return nn.Sequential(
        conv_block(2, 1, 16, 2), conv_block(2, 16, 32, 2),
        conv_block(2, 32, 64, 2), conv_block(2, 64, 64, 1), conv_block(2, 64, 128, 2), conv_block(2, 128, 128, 1), conv_block(2, 128, 128, 2),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 1))


def data(size: int, rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(rows, 1, size, size, generator=g), "y": (torch.rand(rows, generator=g) > 0.5).float()}


def topology(size: int, seed: int = 0) -> Topology:
    torch.manual_seed(seed)
    site, server = split_sequential(ct_model(), [CUT])
    return Topology("bench", [Party("site", data={"image": (1, size, size)}, labels=("y",)), Party("server", "server")],
                    [Segment("site.enc", "site", site, ("data:image",)), Segment("server.rest", "server", server,
                                                                                  ("site.enc",))],
                    [Task("t", "server.rest", "y", share_labels=True)])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_unsplit(size: int, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model, d = ct_model(), data(size, steps * batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(WARMUP + steps):
        if i == WARMUP:
            t0 = time.perf_counter()
        x, y = d["image"][(i % steps) * batch:(i % steps + 1) * batch], d["y"][(i % steps) * batch:(i % steps + 1) * batch]
        opt.zero_grad()
        task_loss("bce", model(x), y).backward()
        opt.step()
    return {"seconds_per_step": (time.perf_counter() - t0) / steps, "peak_mb": {"main": peak_mb()}, "bytes_per_step": 0}


def run_local(size: int, steps: int, batch: int) -> dict:
    d = data(size, steps * batch)
    table = TensorTable(d)
    trainer = SplitTrainer(topology(size), {"site": SiteData(table, TensorTable({k: v[:2] for k, v in d.items()}))},
                           batch_size=batch, shuffle=False,
                           optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    warm = SplitTrainer(topology(size), {"site": SiteData(TensorTable({k: v[:WARMUP * batch] for k, v in d.items()}),
                                                          TensorTable({k: v[:2] for k, v in d.items()}))},
                        batch_size=batch, shuffle=False)
    warm.train_epoch()  # first-call costs (allocator, kernels) outside the timing
    t0 = time.perf_counter()
    trainer.train_epoch()
    seconds = (time.perf_counter() - t0) / steps
    train_bytes = trainer.meter.bytes_by_party("train")["site"]
    return {"seconds_per_step": seconds, "peak_mb": {"main": peak_mb()},
            "bytes_per_step": (train_bytes["sent"] + train_bytes["received"]) / steps}


def _party(name: str, kind: str, port: int, size: int, steps: int, batch: int, queue) -> None:
    """One process of the split run: the same engine pieces a node uses, without the control plane."""
    torch.manual_seed(0)
    plan = compile_topology(topology(size))
    names = NameTable.from_plan(plan)
    peer = "server" if name == "site" else "site"
    args = dict(party=name, peers=[peer], names=names, host="127.0.0.1", port=port, is_host=name == "server",
                run_id="bench", timeout=120, trust=Trust.shared(b"benchmark secret", [peer]), hub="server")
    transport = node_transport(kind, **args)
    transport.connect()
    meter = Meter()
    runner = PartyRunner(name, plan, Wire(transport, meter, plan.allowed(), timeout=120),
                         optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    d = data(size, steps * batch) if name == "site" else None
    schedule = Schedule(plan, {"site": (steps, 2)}, 1, 0, shuffle=False)  # one "row" per step here
    t0 = None
    for epoch in range(2):  # epoch 0: warm-up steps; epoch 1: timed
        for specs in schedule.train_epoch(epoch):
            if epoch == 0 and specs[0].step > WARMUP:
                continue
            if epoch == 1 and t0 is None:
                t0 = time.perf_counter()
            spec = specs[0]
            b = None
            if name == "site":
                i = spec.rows["site"][0]
                b = {k: v[i * batch:(i + 1) * batch] for k, v in d.items()}
            runner.run_unit(Unit(spec, {name: b} if b is not None else {}))
    seconds = (time.perf_counter() - t0) / steps
    transport.flush()
    train = meter.bytes_by_party("train").get(name, {"sent": 0, "received": 0})
    queue.put({"party": name, "seconds_per_step": seconds, "peak_mb": peak_mb(),
               "bytes": train["sent"] + train["received"]})
    time.sleep(0.5)
    transport.close()


def run_processes(kind: str, size: int, steps: int, batch: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Two parties share this machine's cores and take turns computing: OpenMP threads that spin after their
    # work (the default) would steal the other party's cores. A deployment has a machine per party.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_party, args=(name, kind, port, size, steps, batch, queue)) for name in ("server", "site")]
    for p in procs:
        p.start()
        time.sleep(0.5)
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    by = {r["party"]: r for r in results}
    # Both ends time the same steps; the site's clock covers a whole step (forward to update).
    return {"seconds_per_step": by["site"]["seconds_per_step"], "peak_mb": {p: r["peak_mb"] for p, r in by.items()},
            "bytes_per_step": by["site"]["bytes"] / (WARMUP + steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="CT slice size S (1 x S x S)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["unsplit", "local", "gloo", "rpc"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    s, steps, batch = args.size, args.steps, args.batch_size
    cut = 32 * (s // 4) * (s // 4)
    analytic = batch * cut * 4 * 2 + batch * 4  # activations forward, gradients back, labels
    runners = {"unsplit": lambda: run_unsplit(s, steps, batch), "local": lambda: run_local(s, steps, batch),
               "gloo": lambda: run_processes("gloo", s, steps, batch), "rpc": lambda: run_processes("rpc", s, steps, batch)}
    rows = {m: runners[m]() for m in args.modes}
    base = rows["unsplit"]["seconds_per_step"] if "unsplit" in rows else None
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"CT slice 1x{s}x{s}, batch {batch}, cut 32x{s // 4}x{s // 4} ({cut * 4 / 1e6:.2f} MB per patient), "
          f"{steps} timed steps after {WARMUP} warm-up")
    print("| mode | steps/s | time per step vs unsplit | bytes per step (measured) | bytes per step (analytic) "
          "| peak RSS per process (MB) |")
    print("|---|---|---|---|---|---|")
    for mode, r in rows.items():
        ratio = f"{r['seconds_per_step'] / base:.3f}x" if base else "-"
        measured = f"{r['bytes_per_step'] / 1e6:.2f} MB" if mode != "unsplit" else "-"
        expect = f"{analytic / 1e6:.2f} MB" if mode != "unsplit" else "-"
        mem = ", ".join(f"{p} {v:.0f}" for p, v in r["peak_mb"].items())
        print(f"| {mode} | {1 / r['seconds_per_step']:.2f} | {ratio} | {measured} | {expect} | {mem} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
