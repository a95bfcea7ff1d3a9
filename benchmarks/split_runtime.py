"""What splitting costs: the same CT-sized CNN and data, trained unsplit, split in-process, and split over gloo/rpc.

The modes take turns in rounds (unsplit, local, gloo, rpc, then the same in reverse, ...), each round training
every mode for ``--steps`` steps, so a drift in the machine's speed hits every mode alike. Each mode's time
per step is reported as a ratio to unsplit training in the same round: the median over rounds, with its
spread (the half-width of the median's 95% confidence interval; ``benchmarks/rounds.py``) and the number of
rounds after which the spread fell below ``--spread``. Rounds go on until every ratio's spread is below it (at
least ``--min-rounds``, at most ``--rounds``). Also: the ratio of each mode's fastest round to unsplit's
fastest, CPU seconds per step (every process of the mode, as a ratio to unsplit's; steadier than wall time on
a busy machine), steps per second, bytes per step against the analytic size of the cut activations,
gradients and labels, and peak resident memory per process.

Modes: ``unsplit`` (plain PyTorch), ``local`` (every party in this process), ``gloo`` and ``rpc`` (a site
process and a server process); add ``+pipeM`` to pipeline each step over M micro-batches and ``+CODEC`` to
encode the cut (``gloo+pipe2``, ``gloo+int8``, ``local+topk:0.1+int8``). Every split mode trains through the
engine's epoch loop (``benchmarks/ct_bench.py``).

    PYTHONPATH=. .venv/bin/python benchmarks/split_runtime.py --size 256 --steps 3 --json runtime.json
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle OpenMP threads sleep instead of spinning. On a machine whose cores are
# shared (the parties of a split run, or other jobs), spinning threads at a barrier burn the time slices of
# the threads they wait for; measured here at 10x to 50x slower steps under load. Every mode runs with it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.ct_bench import Mode, Setup, make_worker  # noqa: E402
from benchmarks.rounds import run_rounds, summarize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="CT slice size S (1 x S x S)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode in each round")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["unsplit", "local", "gloo", "rpc"])
    parser.add_argument("--rounds", type=int, default=150, help="at most this many rounds")
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--spread", type=float, default=0.03, help="stop once every ratio's spread is below this")
    parser.add_argument("--device", nargs="*", default=[], metavar="PARTY=DEVICE",
                        help="where parties compute, e.g. server=cuda site=cuda (unsplit runs on the server's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    modes = [Mode.parse(m) for m in dict.fromkeys(["unsplit", *args.modes])]
    setup = Setup(args.size, args.batch_size, args.steps, dict(d.split("=", 1) for d in args.device))
    s, batch = args.size, args.batch_size
    cut = 32 * (s // 4) * (s // 4)
    analytic = batch * cut * 4 * 2 + batch * 4  # activations forward, gradients back, labels
    load = os.getloadavg()
    workers = {}
    try:
        for mode in modes:
            workers[mode.name] = make_worker(setup, mode)
        t0 = time.perf_counter()
        rounds = run_rounds(workers, "unsplit", min_rounds=args.min_rounds, max_rounds=args.rounds,
                            spread=args.spread)
        rows = summarize(rounds, workers, "unsplit", args.steps, args.spread, args.min_rounds)
    finally:
        for w in workers.values():
            w.close()
    n = len(rounds["unsplit"])
    devices = ", ".join(f"{p} on {d}" for p, d in setup.devices.items()) or "cpu"
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, "
          f"{devices}; CT slice 1x{s}x{s}, batch {batch}, cut 32x{s // 4}x{s // 4} ({cut * 4 / 1e6:.2f} MB per "
          f"patient); {n} rounds of {args.steps} steps per mode after a warm-up round, "
          f"{time.perf_counter() - t0:.0f} s; load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| mode | steps/s | time per step vs unsplit (median ± spread) | rounds to spread < "
          f"{args.spread} | fastest round vs unsplit's | CPU per step vs unsplit (median ± spread) | bytes per "
          "step (measured) | bytes per step (analytic) | peak RSS per process (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        r = rows[mode.name]
        ratio = f"{r['ratio']:.3f}x ± {r['ratio_spread']:.3f}" if "ratio" in r else "1 (baseline)"
        settled = "-" if "ratio" not in r else (str(r["rounds_to_spread"]) if r["rounds_to_spread"] else f"not in {n}")
        fastest = f"{r['ratio_of_fastest']:.3f}x" if "ratio" in r else "-"
        cpu = f"{r['cpu_ratio']:.3f}x ± {r['cpu_ratio_spread']:.3f}" if "cpu_ratio" in r else "-"
        measured = f"{r['bytes_per_step'] / 1e6:.2f} MB" if mode.name != "unsplit" else "-"
        expect = f"{analytic / 1e6:.2f} MB" if mode.name != "unsplit" and not mode.codecs else "-"
        mem = ", ".join(f"{p} {v:.0f}" for p, v in r["peak_mb"].items())
        print(f"| {mode.name} | {1 / r['seconds_per_step']:.2f} | {ratio} | {settled} | {fastest} | {cpu} | "
              f"{measured} | {expect} | {mem} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
