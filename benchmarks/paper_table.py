"""The paper's resource table at the paper's scale: per-client compute and bandwidth for 100 and 500 clients.

*Split learning for health* (Vepakomma et al., 2018), Table 1: client compute for VGG on CIFAR-10 (TFLOPs) and
client bandwidth for ResNet on CIFAR-100 (GB), split learning (SplitNN) against federated averaging (FL) and
large-batch synchronous SGD (LB-SGD), with 100 and 500 clients. Here, from real steps of the same networks on
CIFAR-shaped tensors (3x32x32; 50,000 training images split evenly: 500 or 100 per client):

- client FLOPs per step are counted by ``torch.utils.flop_counter`` (split: the engine's own count of the
  client's segment, forward and backward; FL and LB-SGD: the whole network's forward and backward);
- bytes per step are what medsplit's meter records crossing the client's boundary in a horizontal split run
  (activations, gradients, labels; plus the client segment's weights handed on once per round); FL sends the
  whole model's state down and up once per round (an epoch of local steps); LB-SGD sends the gradient up and
  the new weights down every step;
- then multiplied by what a client does: FLOPs and cut bytes per image times its images, messages of whole
  models per round (FL) or per step (LB-SGD: ceil(images per client / batch) steps), times ``--epochs``.
  Only a few steps are run: FLOPs and bytes per step do not change from step to step, so the totals are
  extrapolated by step count (running 30 epochs of 50,000 images per method is not possible on this machine).

The paper does not state its epochs, batch size or cut; the client here keeps the first convolution block
(convolution, batch norm, ReLU), the cut the paper's SplitNN compute implies (about 10 MFLOPs per image).
The ratio columns (FL / SplitNN) do not depend on the number of epochs. Then the same split run with codecs.

    PYTHONPATH=. .venv/bin/python benchmarks/paper_table.py --epochs 30 --json paper.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.paper_models import resnet18, vgg16
from medsplit import Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential
from medsplit.engine.units import flat_state

TRAIN_IMAGES = 50_000
CUT = 3  # the first convolution block stays at the client
# Table 1 of the paper: (100 clients, 500 clients)
PAPER = {"vgg16/cifar10": {"compute TFLOPs": {"SplitNN": (0.1548, 0.03), "FL": (29.4, 5.89), "LB-SGD": (29.4, 5.89)}},
         "resnet18/cifar100": {"bandwidth GB": {"SplitNN": (6.0, 1.2), "FL": (3.0, 2.4), "LB-SGD": (13.0, 14.0)}}}
NETWORKS = {"vgg16/cifar10": (vgg16, 10), "resnet18/cifar100": (resnet18, 100)}


def _data(rows: int, classes: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(rows, 3, 32, 32, generator=g), "y": torch.randint(0, classes, (rows,), generator=g)}


def whole_model(build, classes: int, batch: int) -> dict:
    """One real step of the whole network (what an FL or LB-SGD client computes), counted."""
    torch.manual_seed(0)
    model = build(classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    d = _data(batch, classes, 0)
    with FlopCounterMode(display=False) as counter:
        opt.zero_grad()
        nn.functional.cross_entropy(model(d["image"]), d["y"]).backward()
    opt.step()
    params = sum(p.numel() for p in model.parameters())
    return {"flops_per_step": counter.get_total_flops(), "param_bytes": 4 * params,
            "state_bytes": 4 * flat_state(model).numel(), "params": params}


def split_run(build, classes: int, batch: int, codecs: list[str] | None) -> dict:
    """A horizontal split run of two clients, two steps each: the engine's FLOP count and the meter's bytes."""
    torch.manual_seed(0)
    template = build(classes)
    client, server = split_sequential(template, [CUT])
    sites = ["client_1", "client_2"]
    encoders = [Segment(f"{s}.enc", s, copy.deepcopy(client), ("data:image",)) for s in sites]
    topo = Topology("horizontal", [Party(s, data={"image": (3, 32, 32)}, labels=("y",)) for s in sites]
                    + [Party("server", "server")],
                    [*encoders, Segment("server.rest", "server", server, tuple(e.name for e in encoders),
                                        merge="route")],
                    [Task("y", "server.rest", "y", loss="ce", share_labels=True)], schedule="turns",
                    replicas=[tuple(e.name for e in encoders)], codecs={"*": codecs} if codecs else {})
    data = {s: SiteData(TensorTable(_data(2 * batch, classes, i)), TensorTable(_data(2, classes, 9)))
            for i, s in enumerate(sites)}
    trainer = SplitTrainer(topo, data, batch_size=batch, shuffle=False, optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    t0 = time.perf_counter()
    trainer.train_epoch()
    seconds = time.perf_counter() - t0
    train, sync = trainer.meter.bytes_by_party("train"), trainer.meter.bytes_by_party("sync")
    steps = 2  # per client
    return {"client_flops_per_step": trainer.flops_per_step()["client_1"],
            "server_flops_per_step": trainer.flops_per_step()["server"],
            "bytes_per_step": sum(train["client_2"].values()) / steps,
            # client_2 receives the client weights once and hands them on once (to everyone, after the last client)
            "sync_bytes_per_round": sum(sync["client_2"].values()),
            "cut_floats_per_image": trainer.plan.edges["client_1.enc->server.rest"].shape, "seconds": seconds}


def table(epochs: int, batch: int, clients: tuple[int, ...], codecs: list[list[str]]) -> dict:
    out: dict = {}
    for name, (build, classes) in NETWORKS.items():
        whole = whole_model(build, classes, batch)
        splits = {"+".join(c) if c else "float32": split_run(build, classes, batch, c) for c in [[], *codecs]}
        rows = []
        for n_clients in clients:
            images = TRAIN_IMAGES // n_clients
            steps = math.ceil(images / batch)
            per_image = images / batch * epochs  # FLOPs and cut bytes grow with the rows of a step
            fl_flops = whole["flops_per_step"] * per_image
            methods = {
                "FL": (fl_flops, 2 * whole["state_bytes"] * epochs),  # model down and up once a round (epoch)
                "LB-SGD": (fl_flops, 2 * whole["param_bytes"] * steps * epochs),  # gradient up, weights down, each step
            }
            for codec, s in splits.items():
                label = "SplitNN" if codec == "float32" else f"SplitNN {codec}"
                methods[label] = (s["client_flops_per_step"] * per_image,
                                  s["bytes_per_step"] * per_image + s["sync_bytes_per_round"] * epochs)
            rows.append({"clients": n_clients, "images_per_client": images, "steps_per_epoch": steps,
                         "methods": {m: {"tflops": f / 1e12, "gb": b / 1e9} for m, (f, b) in methods.items()}})
        out[name] = {"whole": whole, "split": splits, "rows": rows}
    return out


def _paper(name: str, method: str, i: int) -> str:
    for what, figures in PAPER[name].items():
        base = method.split(" ")[0]
        if base in figures and method == base:
            return f"{figures[base][i]:g} ({what.split()[0]})"
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="epochs (FL rounds) every method trains for")
    parser.add_argument("--batch-size", type=int, default=32, help="per client, every method")
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--codecs", nargs="*", default=["int8", "topk:0.1+int8"],
                        help="split runs with these codec chains too ('+' joins a chain)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = table(args.epochs, args.batch_size, tuple(args.clients), [c.split("+") for c in args.codecs])
    print(f"# {TRAIN_IMAGES} CIFAR-shaped images split evenly, batch {args.batch_size} per client, {args.epochs} "
          f"epochs (FL: one round an epoch); counted FLOPs and metered bytes of real steps, times the steps")
    for name, res in result.items():
        w, s = res["whole"], res["split"]["float32"]
        print(f"\n## {name}: {w['params'] / 1e6:.2f} M parameters; whole network "
              f"{w['flops_per_step'] / args.batch_size / 1e9:.3f} GFLOP per image (forward and backward); client "
              f"segment {s['client_flops_per_step'] / args.batch_size / 1e6:.2f} MFLOP per image; cut "
              f"{'x'.join(map(str, s['cut_floats_per_image']))} per image\n")
        print("| clients | method | client TFLOPs | client GB | paper (TFLOPs or GB) | FL / this (compute) | "
              "FL / this (bytes) |")
        print("|---|---|---|---|---|---|---|")
        for i, row in enumerate(res["rows"]):
            fl = row["methods"]["FL"]
            for method, m in row["methods"].items():
                print(f"| {row['clients']} | {method} | {m['tflops']:.4g} | {m['gb']:.3g} | "
                      f"{_paper(name, method, i)} | "
                      f"{fl['tflops'] / m['tflops']:.3g}x | {fl['gb'] / m['gb']:.3g}x |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=list))


if __name__ == "__main__":
    main()
