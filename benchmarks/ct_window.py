"""Why synthetic CT is read in the soft-tissue window: the multitask preset's two tasks under both windows.

The synthetic lesion is +60..180 HU over 40 HU tissue. The multitask preset (one CT site, a diagnosis head and a
mortality head) is trained on the same synthetic cohort with its CT read in the default window [-1000, 400] HU
and in the soft-tissue window [-160, 240] HU that `medsplit synth` writes. The oracle is the AUC of the true
diagnosis as a score for mortality on the same validation patients: what a model that knew the diagnosis gets.

    python benchmarks/ct_window.py --patients 600 --epochs 10 --seed 0
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import torch
import yaml

from data_adapters.config import load_site_config
from data_adapters.site_data import open_site_data
from medsplit.config import load_experiment
from medsplit.engine.metrics import roc_auc
from sites.cohort import demo_experiment
from sites.run import run_in_process

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = {"default [-1000, 400]": [-1000.0, 400.0], "soft tissue [-160, 240]": [-160.0, 240.0]}


def with_window(exp_path: Path, window: list[float], name: str) -> Path:
    """The experiment with its site reading CT in ``window`` (a site YAML and a cache of its own)."""
    data = yaml.safe_load(exp_path.read_text())
    site_path = exp_path.parent / data["sites"][0]["config"]
    site = yaml.safe_load(site_path.read_text())
    for modality in site["modalities"].values():  # the copy sits elsewhere: its sources stay the same files
        modality["source"] = str((site_path.parent / modality["source"]).resolve())
    image = site["modalities"]["image"]
    image["pipeline"] = {"window": window}
    image["cache_dir"] = str(exp_path.parent / f"cache-{name}")
    (exp_path.parent / f"site-{name}.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    data["sites"][0]["config"] = f"site-{name}.yaml"
    data["experiment"] = f"{data['experiment']}-{name}"
    out = exp_path.parent / f"experiment-{name}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench" / "ct-window")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ct_window.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shutil.rmtree(args.workdir, ignore_errors=True)
    base = demo_experiment("multitask", sites=1, patients=args.patients, seed=args.seed, root=args.workdir,
                           training={"epochs": args.epochs})
    runs = {}
    for label, window in WINDOWS.items():
        exp = load_experiment(with_window(base, window, label.split()[0]))
        history = run_in_process(exp, progress=False, out=open("/dev/null", "w"))["history"]  # noqa: SIM115
        runs[label] = {task: [h["metrics"][task]["val_auc"] for h in history] for task in ("diagnosis", "mortality")}
    site, _ = open_site_data(load_site_config(load_experiment(base).sites[0].config))
    val = site.val.row_ids
    oracle = roc_auc([site.label_values["mortality"][r] for r in val], [site.label_values["diagnosis"][r] for r in val])
    result = {"command": f"python benchmarks/ct_window.py --patients {args.patients} --epochs {args.epochs} "
                        f"--seed {args.seed}",
              "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
              "val_patients": len(val), "runs": runs, "oracle_mortality_auc_from_diagnosis": oracle}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| CT window | diagnosis val AUC | mortality val AUC (epoch {args.epochs}) |\n|---|---|---|")
    for label, r in runs.items():
        print(f"| {label} | {r['diagnosis'][-1]:.3f} | {r['mortality'][-1]:.3f} |")
    print(f"| oracle: the true diagnosis as the score | - | {oracle:.3f} |\nwritten to {args.out}")


if __name__ == "__main__":
    main()
