"""Many sites on one machine: SplitFed and horizontal runs with N site processes over gloo, and what they cost.

Each run is the product's own path (``sites.launch.run_processes``, as ``medsplit run --transport gloo``): a
synthetic cohort of DICOM slices and EHR tables per site (``medsplit synth``), a server process and a site
process per hospital, challenge-response authentication, checkpoints, the run store. Reported per run:
wall time from start to finish, the time of the training epochs alone, training steps and samples per second
at the server, and each process's peak memory: resident set (RSS, which counts the torch libraries every
process maps) and unique set (USS: what the process alone holds, what another site process adds).

    PYTHONPATH=. .venv/bin/python benchmarks/many_sites.py --presets splitfed horizontal --sites 8 16 32
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from sites.cohort import demo_experiment
from sites.launch import run_processes


def _children(root: int) -> list[int]:
    """Every descendant of ``root``, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for kid in parents.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def _memory(pid: int) -> tuple[str, float, float] | None:
    """(party, RSS MB, USS MB) of a node process, known by the log file its output goes to (launched as a
    program or forked, a node writes to logs/PARTY.log), or None for any other process."""
    try:
        out = os.readlink(f"/proc/{pid}/fd/1")
        if not (out.endswith(".log") and Path(out).parent.name == "logs"):
            return None
        fields = {}
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    fields[parts[0].rstrip(":")] = int(parts[1])
        private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        return Path(out).stem, fields.get("Rss", 0) / 1024, private / 1024
    except OSError:
        return None


class MemoryWatch(threading.Thread):
    """Polls this process's descendants; keeps each node process's peak RSS and USS."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.peaks: dict[int, tuple[str, float, float]] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            for pid in _children(os.getpid()):
                m = _memory(pid)
                if m is not None:
                    party, rss, uss = m
                    old = self.peaks.get(pid, (party, 0.0, 0.0))
                    self.peaks[pid] = (party, max(old[1], rss), max(old[2], uss))

    def by_role(self, role: str) -> list[tuple[float, float]]:
        """Peaks of the server (role "server") or of every other party ("site")."""
        return [(rss, uss) for party, rss, uss in self.peaks.values() if (party == "server") == (role == "server")]


def run(preset: str, sites: int, patients: int, epochs: int, batch: int, root: Path, share_imports: bool) -> dict:
    exp = demo_experiment(preset, sites=sites, patients=patients, seed=0, root=root / "data",
                          training={"epochs": epochs, "batch_size": batch, "checkpoint_every": 10_000,
                                    "timeout": 900, "rejoin_timeout": 1800})
    watch = MemoryWatch()
    watch.start()
    t0 = time.perf_counter()
    summary = run_processes(exp, transport="gloo", run_dir=root / f"{preset}-{sites}-{share_imports}",
                            out=io.StringIO(), timeout=7200, share_imports=share_imports)
    wall = time.perf_counter() - t0
    watch.stopped.set()
    watch.join()
    history = summary["history"]
    train_s = sum(h["seconds"] for h in history)
    steps = summary["steps"]
    rows = batch * steps  # upper bound: the last batch of a site may be smaller
    site_mem, server_mem = watch.by_role("site"), watch.by_role("server")
    return {"preset": preset, "sites": sites, "patients_per_site": patients, "epochs": epochs, "wall_s": wall,
            "share_imports": share_imports,
            "train_s": train_s, "steps": steps, "steps_per_s": steps / train_s, "samples_per_s": rows / train_s,
            "site_rss_mb": [round(r, 1) for r, _ in site_mem], "site_uss_mb": [round(u, 1) for _, u in site_mem],
            "server_rss_mb": round(server_mem[0][0], 1) if server_mem else None,
            "server_uss_mb": round(server_mem[0][1], 1) if server_mem else None,
            "val_auc": summary["metrics"].get("diagnosis", {}).get("val_auc"),
            "bytes_per_site": statistics.median(b["sent"] + b["received"] for p, b in summary["bytes"].items()
                                                if p != "server")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["splitfed", "horizontal"])
    parser.add_argument("--sites", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--patients", type=int, default=40, help="patients per site (80%% train)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--launch", nargs="+", choices=["exec", "fork"], default=["exec", "fork"],
                        help="exec: each party a fresh interpreter (medsplit run); fork: forked from one that "
                             "imported torch once (run_processes(share_imports=True))")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="many-sites-") as tmp:
        print(f"# {os.cpu_count()} cores; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
              f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')}; {args.patients} patients per site, "
              f"{args.epochs} epochs, batch {args.batch_size}")
        print("| preset | site processes | launch | wall s (start to end) | training s | steps | server steps/s | "
              "server samples/s | site RSS MB (median, max) | site USS MB (median) | server RSS / USS MB | "
              "MB per site | val AUC |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for preset in args.presets:
            for n in args.sites:
                for launch in args.launch:
                    r = run(preset, n, args.patients, args.epochs, args.batch_size, Path(tmp), launch == "fork")
                    rows.append(r)
                    _row(r, launch)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _row(r: dict, launch: str) -> None:
    rss, uss = r["site_rss_mb"], r["site_uss_mb"]
    print(f"| {r['preset']} | {r['sites']} | {launch} | {r['wall_s']:.0f} | {r['train_s']:.1f} | {r['steps']} | "
          f"{r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} | {statistics.median(rss):.0f}, {max(rss):.0f} | "
          f"{statistics.median(uss):.0f} | {r['server_rss_mb']:.0f} / {r['server_uss_mb']:.0f} | "
          f"{r['bytes_per_site'] / 1e6:.2f} | {r['val_auc']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
