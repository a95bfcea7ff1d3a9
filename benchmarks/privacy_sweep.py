"""The privacy-utility sweep: the leakage report card across defense strengths, for vanilla, U-shaped and vertical.

Each configuration is one `medsplit privacy` run (the same code path: ``sites.privacy.run_privacy``) on
synthetic patients made in memory. The script writes the raw numbers as JSON, a table and a plot, and the
NoPeek scaling study (why an absolute alpha stalls small runs), and rewrites the marked part of
docs/privacy.md with them:

    PYTHONPATH=. .venv/bin/python benchmarks/privacy_sweep.py --json benchmarks/results/privacy_sweep.json \\
        --docs docs/privacy.md --figures docs/img --runs /tmp/privacy-sweep
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medsplit import PresetConfig, SplitTrainer, build_preset, distance_correlation, preset_data
from medsplit.engine.metrics import task_loss
from medsplit.privacy.report import LEAK_AUC_GOAL, SSIM_GOAL
from sites.privacy import PrivacyOptions, run_privacy

#: (preset, preset flags, label of the defense, defense flags); each preset's first row is its baseline
CONFIGS: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("vanilla", {}, "none", {}),
    ("vanilla", {}, "noise 1", {"noise": 1.0}),
    ("vanilla", {}, "noise 2", {"noise": 2.0}),
    ("vanilla", {}, "nopeek 4", {"nopeek": 4.0}),
    ("ushaped", {}, "none", {}),
    ("ushaped", {}, "noise 1", {"noise": 1.0}),
    ("ushaped", {}, "noise 2", {"noise": 2.0}),
    ("ushaped", {}, "max_norm", {"label_defense": "max_norm"}),
    ("ushaped", {}, "marvell 4", {"label_defense": "marvell", "label_strength": 4.0}),
    ("ushaped", {}, "marvell 16", {"label_defense": "marvell", "label_strength": 16.0}),
    ("ushaped", {}, "noise 2 + marvell 4", {"noise": 2.0, "label_defense": "marvell", "label_strength": 4.0}),
    ("vertical", {"ushaped": True}, "none", {}),
    ("vertical", {"ushaped": True}, "noise 1", {"noise": 1.0}),
    ("vertical", {"ushaped": True}, "nopeek 4", {"nopeek": 4.0}),
    ("vertical", {"ushaped": True}, "marvell 4", {"label_defense": "marvell", "label_strength": 4.0}),
    ("vertical", {"ushaped": True}, "noise 1 + marvell 4",
     {"noise": 1.0, "label_defense": "marvell", "label_strength": 4.0}),
]


def card_row(preset: str, pflags: dict, label: str, dflags: dict, args: argparse.Namespace, runs: Path) -> dict:
    t0 = time.perf_counter()
    opts = PrivacyOptions(preset=preset, epochs=args.epochs, seed=args.seed, patients=args.patients,
                          aux_patients=args.patients, decoder_steps=args.decoder_steps, progress=False,
                          run_dir=str(runs / re.sub(r"[^a-z0-9]+", "-", f"{preset}-{label}")), **pflags, **dflags)
    summary = run_privacy(opts, out=io.StringIO())
    p = summary["privacy"]
    cuts = {c: {"dcor": v["dcor"], "ssim": v["reconstruction"]["ssim"], "r2": v["reconstruction"]["r2"],
                "baseline_ssim": v["reconstruction"]["baseline"].get("ssim")} for c, v in p["cuts"].items()}
    labels = {t: {"shared": v["shared"], "norm": v["norm_leak_auc"], "direction": v["direction_leak_auc"]}
              for t, v in p["labels"].items()}
    return {"preset": preset + (" (U-shaped)" if pflags.get("ushaped") else ""), "defense": label,
            "val_auc": summary["metrics"]["diagnosis"]["val_auc"], "cuts": cuts, "labels": labels,
            "run_dir": opts.run_dir, "seconds": round(time.perf_counter() - t0, 1)}


def verdicts(rows: list[dict]) -> None:
    """Each row's AUC drop against its preset's baseline, and whether a cut of it meets the goal."""
    base = {}
    for r in rows:
        base.setdefault(r["preset"], r["val_auc"])
        r["auc_drop"] = base[r["preset"]] - r["val_auc"]
        leaks = [max(v for v in (lab["norm"], lab["direction"]) if v is not None) for lab in r["labels"].values()
                 if not lab["shared"] and (lab["norm"] is not None or lab["direction"] is not None)]
        shared = any(lab["shared"] for lab in r["labels"].values())
        r["labels_ok"] = False if shared else all(x <= LEAK_AUC_GOAL for x in leaks)
        r["cuts_ok"] = [c for c, v in r["cuts"].items() if v["ssim"] is not None and v["ssim"] <= SSIM_GOAL]
        r["goal"] = bool(r["cuts_ok"]) and r["labels_ok"] and r["auc_drop"] <= 0.01


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def table(rows: list[dict]) -> str:
    out = ["| preset | defense | val AUC | Δ AUC | cut: dCor / SSIM (baseline) or R² "
           "| label leak AUC: norm / direction | goal met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cuts = "<br>".join(f"{c}: {_f(v['dcor'])} / " + (f"SSIM {_f(v['ssim'])} ({_f(v['baseline_ssim'])})"
                                                        if v["ssim"] is not None else f"R² {_f(v['r2'])}")
                           for c, v in sorted(r["cuts"].items()))
        labels = "<br>".join(("sent in the clear" if lab["shared"] else "") +
                             (f"{'; ' if lab['shared'] else ''}{_f(lab['norm'])} / {_f(lab['direction'])}"
                              if lab["norm"] is not None or lab["direction"] is not None else "")
                             for lab in r["labels"].values())
        goal = ("yes: " + ", ".join(r["cuts_ok"])) if r["goal"] else "no"
        out.append(f"| {r['preset']} | {r['defense']} | {r['val_auc']:.3f} | {-r['auc_drop']:+.3f} | {cuts} | "
                   f"{labels} | {goal} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    marks = {"vanilla": "o", "ushaped": "s", "vertical (U-shaped)": "^"}
    for r in rows:
        m = marks.get(r["preset"], "x")
        ssims = [v["ssim"] for v in r["cuts"].values() if v["ssim"] is not None]
        if ssims:
            axes[0].scatter(-r["auc_drop"], max(ssims), marker=m)
            axes[0].annotate(f"{r['preset'].split()[0]}: {r['defense']}", (-r["auc_drop"], max(ssims)), fontsize=6)
        leaks = [max(v for v in (lab["norm"], lab["direction"]) if v is not None) for lab in r["labels"].values()
                 if not lab["shared"] and (lab["norm"] is not None or lab["direction"] is not None)]
        if leaks:
            axes[1].scatter(-r["auc_drop"], max(leaks), marker=m)
            axes[1].annotate(f"{r['preset'].split()[0]}: {r['defense']}", (-r["auc_drop"], max(leaks)), fontsize=6)
    for ax, goal, what in ((axes[0], SSIM_GOAL, "image reconstruction SSIM (worst image cut)"),
                           (axes[1], LEAK_AUC_GOAL, "label leak AUC (worst attack)")):
        ax.axhline(goal, color="green", lw=0.8, ls="--")
        ax.axvline(-0.01, color="green", lw=0.8, ls="--")
        ax.set_xlabel("val AUC change against no defense")
        ax.set_ylabel(what)
    fig.suptitle("privacy against utility (goal: below the horizontal line, right of the vertical one)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def nopeek_ratio(batch_sizes=(8, 32, 128), seeds=(0, 1, 2)) -> list[dict]:
    """|alpha * grad dCor| / |grad task| at the EHR and imaging cuts of an untrained vertical model, alpha 0.5."""
    out = []
    for b in batch_sizes:
        for seed in seeds:
            torch.manual_seed(seed)
            cfg = PresetConfig()
            topo = build_preset("vertical", cfg)
            segs = {s.name: s.module for s in topo.segments}
            data = preset_data(topo, cfg, seed=seed, patients=480)
            rows = list(range(b))
            batch = {s: data[s].train.batch(rows) for s in ("imaging", "ehr")}
            z = {"imaging": segs["imaging.encoder"](batch["imaging"]["image"]),
                 "ehr": segs["ehr.encoder"](batch["ehr"]["ehr"])}
            leaves = {k: v.detach().requires_grad_(True) for k, v in z.items()}
            logits = segs["server.head"](torch.cat([leaves["imaging"], leaves["ehr"]], 1))
            task_loss("bce", logits, batch["ehr"]["diagnosis"]).backward()
            row = {"batch": b, "seed": seed}
            for site, key in (("imaging", "image"), ("ehr", "ehr")):
                zz = z[site].detach().requires_grad_(True)
                distance_correlation(batch[site][key], zz).backward()
                row[site] = round(float(0.5 * zz.grad.norm() / leaves[site].grad.norm()), 2)
            out.append(row)
    return out


def nopeek_small_runs(seeds=(0, 1), patients=128, epochs=5) -> list[dict]:
    """Vertical (labels to the server), 128 training patients, 5 epochs: no NoPeek, alpha 0.5 absolute, relative."""
    out = []
    for scale, alpha in (("off", 0.0), ("absolute", 0.5), ("relative", 0.5)):
        for seed in seeds:
            torch.manual_seed(seed)
            cfg = PresetConfig()
            topo = build_preset("vertical", cfg)
            if alpha:
                from medsplit.topology import NoPeek, defend

                topo = defend(topo, {s: [NoPeek(alpha, scale)] for s in topo.sites})  # type: ignore[arg-type]
            trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=seed, patients=patients), batch_size=32,
                                   seed=seed)
            rec = trainer.fit(epochs)[-1]
            out.append({"nopeek": scale, "alpha": alpha, "seed": seed,
                        "val_auc": round(rec.metrics["diagnosis"]["val_auc"], 3),
                        "dcor": {k: round(v, 3) for k, v in sorted(rec.dcor.items())}})
    return out


def nopeek_tables(ratios: list[dict], small: list[dict]) -> str:
    lines = ["| batch | seed | imaging cut | EHR cut |", "|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['seed']} | {r['imaging']:.2f}x | {r['ehr']:.2f}x |" for r in ratios]
    lines += ["", "| NoPeek | seed | val AUC | dCor imaging / EHR |", "|---|---|---|---|"]
    lines += [f"| {r['nopeek']}{' 0.5' if r['alpha'] else ''} | {r['seed']} | {r['val_auc']:.3f} | "
              f"{r['dcor'].get('imaging.encoder', 0):.3f} / {r['dcor'].get('ehr.encoder', 0):.3f} |" for r in small]
    return "\n".join(lines)


def replace_section(doc: Path, marker: str, text: str) -> None:
    body = doc.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in body:
        raise SystemExit(f"{doc} has no '{start}' marker")
    head, rest = body.split(start, 1)
    doc.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--patients", type=int, default=320)
    ap.add_argument("--decoder-steps", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="presets to run (default: all)")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--docs", type=Path, help="rewrite the sweep's marked sections of this markdown file")
    ap.add_argument("--figures", type=Path, help="folder for the plot and the example card figures")
    ap.add_argument("--runs", type=Path, help="run directories (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="privacy-sweep-"))
    t0 = time.perf_counter()
    rows = []
    for preset, pflags, label, dflags in CONFIGS:
        if args.only and preset not in args.only:
            continue
        rows.append(card_row(preset, pflags, label, dflags, args, runs))
        print(json.dumps({k: rows[-1][k] for k in ("preset", "defense", "val_auc", "cuts", "labels", "seconds")}),
              flush=True)
    verdicts(rows)
    ratios, small = nopeek_ratio(), nopeek_small_runs()
    seconds = time.perf_counter() - t0
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    meta = {"epochs": args.epochs, "patients": args.patients, "decoder_steps": args.decoder_steps, "seed": args.seed,
            "machine": machine, "seconds": round(seconds, 1)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "nopeek_ratio": ratios,
                                         "nopeek_small": small}, indent=2))
    print(table(rows))
    print(nopeek_tables(ratios, small))
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        plot(rows, args.figures / "privacy_sweep.png")
        for r in rows:  # the card's own figures, for the docs: U-shaped without a defense and with the best one
            if r["preset"] == "ushaped" and r["defense"] in ("none", "noise 2 + marvell 4"):
                tag = "none" if r["defense"] == "none" else "defended"
                for png in Path(r["run_dir"], "privacy").glob("*.png"):
                    shutil.copy(png, args.figures / f"privacy_ushaped_{tag}_{png.name.split('_')[0]}.png")
    if args.docs:
        replace_section(args.docs, "sweep", f"{machine}; {args.patients} training patients per site, {args.epochs} "
                                            f"epochs, seed {args.seed}, decoder {args.decoder_steps} steps; "
                                            f"{seconds / 60:.0f} minutes in all.\n\n" + table(rows))
        replace_section(args.docs, "nopeek", nopeek_tables(ratios, small))


if __name__ == "__main__":
    main()
