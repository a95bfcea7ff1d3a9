"""Client compute and communication: split learning against federated averaging, measured on one model.

The same CNN is trained on the same synthetic patients, partitioned over N clients (hospitals), by
  - split learning with one client segment handed from site to site (horizontal, Gupta & Raskar),
  - SplitFed (client copies averaged each epoch, Thapa et al.),
  - federated averaging of the whole model (FedAvg, McMahan et al.).
Client FLOPs are counted by torch.utils.flop_counter; bytes are what crossed each client's boundary
(medsplit's meter for split, parameter bytes down and up per round for FedAvg).

    python benchmarks/split_vs_federated.py --clients 10 50 --patients-per-client 40 400 --epochs 2
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medsplit import Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential
from medsplit.data import batch_order
from medsplit.engine.metrics import roc_auc, task_loss
from medsplit.synthetic import CohortSpec, make_cohort
from medsplit.topology import conv_block

CUT = 2  # the client keeps the first two conv layers


def full_model() -> nn.Sequential:
    """A small VGG-style CNN for 32x32 single-channel images (about 0.3 M parameters)."""
    return nn.Sequential(
        conv_block(2, 1, 16, 2), conv_block(2, 16, 32, 2),  # client side: two strided convolutions -> (32, 8, 8)
        conv_block(2, 32, 64, 1), conv_block(2, 64, 64, 2), conv_block(2, 64, 128, 1), conv_block(2, 128, 128, 2),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1))


def cohorts(clients: int, per_client: int, seed: int) -> list[dict[str, dict[str, torch.Tensor]]]:
    out = []
    for i in range(clients):
        spec = CohortSpec(per_client + max(8, per_client // 4), 32, 4, shift=0.1 * (i % 5), noise=0.4 + 0.05 * (i % 4))
        c = make_cohort(spec, seed * 7919 + i)
        img = c["image"].reshape(c["image"].shape[0], -1)
        c["image"] = ((img - img.mean(1, keepdim=True)) / img.std(1, keepdim=True)).view_as(c["image"])
        out.append({"train": {k: c[k][:per_client] for k in ("image", "diagnosis")},
                    "val": {k: c[k][per_client:] for k in ("image", "diagnosis")}})
    return out


def run_split(schedule: str, parts: list, epochs: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    template = full_model()
    sites = [f"site_{i + 1}" for i in range(len(parts))]
    encoders = [Segment(f"{s}.enc", s, copy.deepcopy(split_sequential(template, [CUT])[0]), ("data:image",))
                for s in sites]
    server = Segment("server.rest", "server", split_sequential(template, [CUT])[1], tuple(e.name for e in encoders),
                     merge="route")
    topo = Topology(schedule, [Party(s, data={"image": (1, 32, 32)}, labels=("diagnosis",)) for s in sites]
                    + [Party("server", "server")], encoders + [server],
                    [Task("diagnosis", "server.rest", "diagnosis", share_labels=True)],
                    schedule=schedule, replicas=[tuple(e.name for e in encoders)],
                    aggregator="server" if schedule == "parallel" else None)
    data = {s: SiteData(TensorTable(p["train"]), TensorTable(p["val"])) for s, p in zip(sites, parts, strict=False)}
    trainer = SplitTrainer(topo, data, batch_size=batch, seed=seed,
                           optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
    t0 = time.perf_counter()
    trainer.fit(epochs)
    seconds = time.perf_counter() - t0
    steps_per_client = [len(batch_order(len(p["train"]["diagnosis"]), batch, seed, 0)) for p in parts]
    flops = trainer.flops_per_step()
    # Training traffic only (activations, gradients, labels, and the client weights that travel between
    # sites); the validation passes are left out, as FedAvg's evaluation is.
    train, sync = trainer.meter.bytes_by_party("train"), trainer.meter.bytes_by_party("sync")
    client_bytes = [sum(t.get(s, {}).get(k, 0) for t in (train, sync) for k in ("sent", "received")) / epochs
                    for s in sites]
    client_flops = sum(flops[s] * n for s, n in zip(sites, steps_per_client, strict=True))
    return {"client_gflops_per_epoch": client_flops / len(sites) / 1e9,
            "client_mb_per_epoch": sum(client_bytes) / len(sites) / 1e6,
            "server_gflops_per_epoch": flops["server"] * sum(steps_per_client) / 1e9,
            "val_auc": trainer.history[-1].metrics["diagnosis"]["val_auc"], "seconds": seconds}


def run_fedavg(parts: list, epochs: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    global_model = full_model()
    n_params = sum(t.numel() for t in global_model.state_dict().values() if t.is_floating_point())
    param_bytes = 4 * n_params
    flops_total = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        states, weights = [], []
        for i, part in enumerate(parts):
            local = copy.deepcopy(global_model)  # download
            opt = torch.optim.Adam(local.parameters(), lr=1e-3)
            local.train()
            order = batch_order(len(part["train"]["diagnosis"]), batch, seed + i, epoch)
            for k, idx in enumerate(order):
                counting = epoch == 0 and k == 0  # one full step measured per client; FLOPs per step are fixed
                ctx = FlopCounterMode(display=False) if counting else None
                if ctx:
                    ctx.__enter__()
                opt.zero_grad()
                loss = task_loss("bce", local(part["train"]["image"][idx]), part["train"]["diagnosis"][idx])
                loss.backward()
                if ctx:
                    ctx.__exit__(None, None, None)
                    flops_total += ctx.get_total_flops() * len(order)
                opt.step()
            states.append({k: v.detach().clone() for k, v in local.state_dict().items()})  # upload
            weights.append(len(part["train"]["diagnosis"]))
        total = sum(weights)
        avg = {k: sum(s[k].float() * w for s, w in zip(states, weights, strict=False)) / total for k in states[0]}
        global_model.load_state_dict({k: v.to(states[0][k].dtype) for k, v in avg.items()})
    seconds = time.perf_counter() - t0
    global_model.eval()
    with torch.no_grad():
        scores = torch.cat([global_model(p["val"]["image"]).reshape(-1) for p in parts])
    labels = torch.cat([p["val"]["diagnosis"] for p in parts])
    return {"client_gflops_per_epoch": flops_total / len(parts) / 1e9,
            "client_mb_per_epoch": 2 * param_bytes / 1e6,
            "server_gflops_per_epoch": 0.0,
            "val_auc": roc_auc(labels.numpy(), scores.numpy()), "seconds": seconds, "params": n_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--patients-per-client", type=int, nargs="+", default=[40, 400])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print("| clients | patients/client | method | client GFLOP/epoch | client MB/epoch | server GFLOP/epoch"
          " | val AUC | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for clients in args.clients:
        for per_client in args.patients_per_client:
            parts = cohorts(clients, per_client, args.seed)
            runs = [("split (horizontal)", run_split, ("turns",)), ("SplitFed", run_split, ("parallel",)),
                    ("FedAvg", run_fedavg, ())]
            for method, fn, mode in runs:
                r = fn(*mode, parts, args.epochs, args.batch_size, args.seed)
                rows.append({"clients": clients, "patients_per_client": per_client, "method": method, **r})
                print(f"| {clients} | {per_client} | {method} | {r['client_gflops_per_epoch']:.3f} | "
                      f"{r['client_mb_per_epoch']:.2f} | {r['server_gflops_per_epoch']:.2f} | {r['val_auc']:.3f} | "
                      f"{r['seconds']:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
