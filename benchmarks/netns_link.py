"""Time per step over a hospital-like link: the server and the site in their own network namespaces, on their
own addresses, the link between them rate-limited (tbf), at each rate with float32 and with each codec and
with pipelined steps.

For each rate, every mode (a server process and a site process over gloo, the engine's epoch loop in each:
``benchmarks/ct_bench.py``) trains the CT model for ``--steps`` steps per round; the modes take turns in
rounds, and each is reported as a ratio to plain float32 gloo in the same round (median over rounds, with
its spread: the half-width of the median's 95% confidence interval, ``benchmarks/rounds.py``; the JSON keeps
the interquartile range too). Needs root and iproute2; says so and exits 2 where it cannot run.
The namespaces are removed when it ends, also after an error or Ctrl-C (``benchmarks/netns.py``).

    PYTHONPATH=. .venv/bin/python benchmarks/netns_link.py --rates 100mbit 1gbit --json netns.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch's import; see split_runtime.py

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.ct_bench import Mode, ProcessWorker, Setup  # noqa: E402
from benchmarks.netns import Lab, LabError, remove_stale, why_not  # noqa: E402
from benchmarks.rounds import run_rounds, summarize  # noqa: E402

MODES = ["gloo", "gloo+pipe2", "gloo+pipe4", "gloo+fp16", "gloo+bf16", "gloo+int8", "gloo+topk:0.1+int8",
         "gloo+pipe4+int8"]


def _bits_per_second(rate: str) -> float:
    for suffix, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if rate.endswith(suffix):
            return float(rate[: -len(suffix)]) * scale
    raise SystemExit(f"rate '{rate}': use e.g. 100mbit or 1gbit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", nargs="+", default=["100mbit", "1gbit"])
    parser.add_argument("--modes", nargs="+", default=MODES, help="gloo, with +pipeM and +CODEC (see split_runtime.py)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per mode in each round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-rounds", type=int, default=3)
    parser.add_argument("--spread", type=float, default=0.03)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reason = why_not()
    if reason:
        print(f"netns_link: cannot run here: {reason}", file=sys.stderr)
        raise SystemExit(2)
    stale = remove_stale()
    if stale:
        print(f"# removed namespaces left by a killed run: {', '.join(stale)}")
    modes = [Mode.parse(m) for m in dict.fromkeys(["gloo", *args.modes])]
    if any(m.transport != "gloo" for m in modes):
        raise SystemExit("netns_link runs gloo modes only (gloo, gloo+pipe2, gloo+int8, ...)")
    setup = Setup(args.size, args.batch_size, args.steps)
    results: dict[str, dict] = {}
    logs = Path(tempfile.mkdtemp(prefix="netns-link-"))
    try:
        with Lab(["server", "site"], rate=args.rates[0]) as lab:
            workers = {}
            try:
                for i, mode in enumerate(modes):
                    workers[mode.name] = ProcessWorker(
                        setup, mode, prefix={p: lab.prefix(p) for p in ("server", "site")},
                        host=lab.address("server"), port=29600 + i, ifnames={"server": "eth0", "site": "eth0"},
                        logs=logs, timeout=600)
                    for proc in workers[mode.name].procs.values():
                        lab.adopt(proc)
                for rate in args.rates:
                    lab.set_rate(rate)
                    t0 = time.perf_counter()
                    def log(line: str, r: str = rate) -> None:
                        print(f"# {r} {line[2:]}", flush=True)

                    rounds = run_rounds(workers, "gloo", min_rounds=args.min_rounds, max_rounds=args.rounds,
                                        spread=args.spread, log=log)
                    rows = summarize(rounds, workers, "gloo", args.steps, args.spread, args.min_rounds)
                    results[rate] = {"seconds": time.perf_counter() - t0, "modes": rows}
            finally:
                for w in workers.values():
                    w.close()
    except LabError as exc:
        print(f"netns_link: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    s = args.size
    print(f"# server and site in their own namespaces (10.77.0.1, 10.77.0.2), gloo; CT slice 1x{s}x{s}, batch "
          f"{args.batch_size}, cut 32x{s // 4}x{s // 4}; {args.steps} steps a round; logs in {logs}")
    print("| link | mode | s per step | vs float32 gloo (median, spread) | rounds | MB per step | "
          "the link's time for those bytes (s) |")
    print("|---|---|---|---|---|---|---|")
    for rate, res in results.items():
        for mode in modes:
            r = res["modes"][mode.name]
            ratio = f"{r['ratio']:.3f}x ({r['ratio_spread']:.3f})" if "ratio" in r else "1 (baseline)"
            wire = r["bytes_per_step"] * 8 / _bits_per_second(rate)
            print(f"| {rate} | {mode.name} | {r['seconds_per_step']:.3f} | {ratio} | {r['rounds']} | "
                  f"{r['bytes_per_step'] / 1e6:.2f} | {wire:.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
