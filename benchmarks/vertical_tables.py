"""A vertical study of two EHR tables, split over gloo, against one model trained on both tables pooled.

The study is experiments/vertical-two-ehr.yaml: institution A holds 15 features (after encoding) and the outcome,
a text column mapped to 0/1 in its site YAML; institution B holds 22 other features of partly the same patients.
`medsplit synth --for` writes both tables (``--overlap`` of each site's patients shared); the split run is every
party as its own process over gloo, aligned by private set intersection. The centralized model is a plain MLP on
the two tables joined on the same common patients, with the same train/validation split, encoding, epochs,
batch size and learning rate. Each table alone shows what the join is worth.

    python benchmarks/vertical_tables.py --patients 2000 --overlap 0.85 --epochs 10 --seed 0
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from data_adapters.config import load_site_config
from data_adapters.site_data import open_site_data
from data_adapters.synth_study import synth_for_experiment
from medsplit.data import batch_order
from medsplit.engine.metrics import roc_auc
from sites.launch import run_processes

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "vertical-two-ehr.yaml"


def write_study(workdir: Path, patients: int, overlap: float, seed: int, epochs: int, batch: int, lr: float
                ) -> Path:
    """The cohort and its experiment (the example's, with this benchmark's training settings)."""
    shutil.rmtree(workdir / "cohort", ignore_errors=True)
    res = synth_for_experiment(EXPERIMENT, workdir / "cohort", patients=patients, seed=seed, overlap=overlap)
    data = yaml.safe_load(res.experiment.read_text())
    data["seed"] = seed
    data["training"] = {**data["training"], "epochs": epochs, "batch_size": batch, "lr": lr,
                        "checkpoint_every": 10_000}
    data["server"]["run_dir"] = str(workdir / "split")
    res.experiment.write_text(yaml.safe_dump(data, sort_keys=False))
    return res.experiment


def pooled(exp_dir: Path) -> dict[str, np.ndarray]:
    """Both tables encoded by each site's own pipeline, joined on the common patients, in the sites' split."""
    a, _ = open_site_data(load_site_config(exp_dir / "ehr_a" / "site.yaml"))
    b, _ = open_site_data(load_site_config(exp_dir / "ehr_b" / "site.yaml"))
    common = sorted(set(a.row_ids) & set(b.row_ids))
    out = {}
    for split in ("train", "val"):
        ids = [r for r in common if a.splits[r] == split]
        out[f"{split}_a"] = np.stack([a.prepared["ehr"].features[r] for r in ids])
        out[f"{split}_b"] = np.stack([b.prepared["ehr"].features[r] for r in ids])
        out[f"{split}_y"] = np.array([a.label_values["outcome"][r] for r in ids], dtype=np.float32)
    return out


def train_mlp(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, *, epochs: int, batch: int, lr: float,
              seed: int) -> list[float]:
    """A plain MLP (widths of the split model: 64, 32, then 32) trained with Adam; validation AUC per epoch."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32),
                          nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt, xvt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(xv)
    aucs = []
    for epoch in range(epochs):
        for rows in batch_order(len(xt), batch, seed, epoch):
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(xt[rows]).reshape(-1), yt[rows])
            loss.backward()
            opt.step()
        with torch.no_grad():
            aucs.append(roc_auc(yv, model(xvt).reshape(-1).numpy()))
    return aucs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=2000, help="patients per institution")
    ap.add_argument("--overlap", type=float, default=0.85, help="fraction of each institution's patients both hold")
    ap.add_argument("--epochs", type=int, default=10, help="the split and the pooled models overfit after about 10")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench" / "vertical-tables")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vertical_tables.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    exp = write_study(args.workdir, args.patients, args.overlap, args.seed, args.epochs, args.batch_size, args.lr)
    t0 = time.perf_counter()
    split = run_processes(exp, transport="gloo", run_dir=args.workdir / "split", timeout=3600)
    split_seconds = time.perf_counter() - t0
    split_aucs = [h["metrics"]["outcome"]["val_auc"] for h in split["history"]]

    d = pooled(exp.parent)
    kw = {"epochs": args.epochs, "batch": args.batch_size, "lr": args.lr, "seed": args.seed}
    central = train_mlp(np.c_[d["train_a"], d["train_b"]], d["train_y"], np.c_[d["val_a"], d["val_b"]], d["val_y"],
                        **kw)
    alone_a = train_mlp(d["train_a"], d["train_y"], d["val_a"], d["val_y"], **kw)
    alone_b = train_mlp(d["train_b"], d["train_y"], d["val_b"], d["val_y"], **kw)

    result = {
        "command": "python benchmarks/vertical_tables.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("workdir", "out")),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "study": {"features": [d["train_a"].shape[1], d["train_b"].shape[1]], "patients_per_site": args.patients,
                  "overlap": args.overlap, "aligned": int(len(d["train_y"]) + len(d["val_y"])),
                  "train": int(len(d["train_y"])), "val": int(len(d["val_y"])), "positives_val": int(d["val_y"].sum())},
        "split_gloo": {"val_auc": split_aucs[-1], "history": split_aucs, "seconds": round(split_seconds, 1),
                       "bytes": split["bytes"]},
        "centralized": {"val_auc": central[-1], "history": central},
        "site_a_alone": {"val_auc": alone_a[-1]}, "site_b_alone": {"val_auc": alone_b[-1]},
        "gap": abs(split_aucs[-1] - central[-1]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"aligned {d['train_y'].size + d['val_y'].size} common patients "
          f"({len(d['train_y'])} train, {len(d['val_y'])} val); features {result['study']['features']}")
    print("| model | val AUC |\n|---|---|")
    for name, auc in (("split, vertical over gloo", split_aucs[-1]), ("centralized (tables pooled)", central[-1]),
                      ("institution A's table alone", alone_a[-1]), ("institution B's table alone", alone_b[-1])):
        print(f"| {name} | {auc:.3f} |")
    print(f"gap split vs centralized: {result['gap']:.3f} (target: within 0.02); written to {args.out}")


if __name__ == "__main__":
    main()
