"""Wire codecs against float32: bytes per step and validation AUC, on the same patients, model and seeds.

For each seed, every codec chain trains the same preset from the same initial weights on the same synthetic
patients (made in memory, one process) for the same epochs; only the encoding of the cut activations and
gradients differs. Reported per chain: the bytes of activations and gradients per training step (what the
meter saw cross), their ratio to float32, and the final validation AUC: its mean over seeds and its mean
difference to float32 on the same seed (in AUC points: 1 point = 0.01), with the spread of that difference.

    PYTHONPATH=. .venv/bin/python benchmarks/codec_auc.py --preset vanilla --patients 1200 --epochs 5 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from medsplit import PresetConfig, SplitTrainer, build_preset, preset_data

CHAINS = ["float32", "fp16", "bf16", "int8", "topk:0.25+int8", "topk:0.1+int8", "topk:0.05+int8"]


def train(preset: str, chain: str, seed: int, patients: int, epochs: int, batch: int) -> dict:
    cfg = PresetConfig(image_shape=(1, 32, 32))
    torch.manual_seed(seed)
    topo = build_preset(preset, cfg)
    if chain != "float32":
        topo.codecs = {"*": chain.split("+")}
    data = preset_data(topo, cfg, seed=seed, patients=patients)
    trainer = SplitTrainer(topo, data, batch_size=batch, seed=seed)
    t0 = time.perf_counter()
    history = trainer.fit(epochs)
    sent = trainer.meter.bytes_by_kind("train")
    train_cut = sent.get("activation", 0) + sent.get("gradient", 0)
    task = next(iter(history[-1].metrics))
    return {"val_auc": history[-1].metrics[task]["val_auc"], "cut_bytes_per_step": train_cut / trainer.train_steps,
            "seconds": time.perf_counter() - t0,
            "auc_by_epoch": [h.metrics[task]["val_auc"] for h in history]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vanilla")
    parser.add_argument("--chains", nargs="+", default=CHAINS, help="codec chains ('+' joins), float32 = none")
    parser.add_argument("--patients", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = {c: [train(args.preset, c, s, args.patients, args.epochs, args.batch_size) for s in args.seeds]
            for c in dict.fromkeys(["float32", *args.chains])}
    base = runs["float32"]
    print(f"# preset {args.preset}, {args.patients} synthetic patients per site (in memory), {args.epochs} epochs, "
          f"batch {args.batch_size}, seeds {args.seeds}")
    print("| codec | cut bytes per step | fewer bytes than float32 | val AUC (mean over seeds) | "
          "AUC - float32 (points, mean, min..max over seeds) |")
    print("|---|---|---|---|---|")
    for chain, rs in runs.items():
        per_step = statistics.mean(r["cut_bytes_per_step"] for r in rs)
        ratio = statistics.mean(b["cut_bytes_per_step"] for b in base) / per_step
        diffs = [100 * (r["val_auc"] - b["val_auc"]) for r, b in zip(rs, base, strict=True)]
        print(f"| {chain} | {per_step / 1e3:.1f} kB | {ratio:.2f}x | {statistics.mean(r['val_auc'] for r in rs):.4f} | "
              f"{statistics.mean(diffs):+.2f} ({min(diffs):+.2f}..{max(diffs):+.2f}) |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
