"""Where an in-process split step spends its time next to an unsplit one: cProfile of both, on the same batches.

The same CT model and data as ``split_runtime.py`` (``ct_bench``), ``--threads`` intra-op threads,
``--rounds`` rounds of ``--steps`` steps each after one warm-up round, unsplit then local; prints the time per
step of each, then the functions with the most time of their own for each, and the engine's own Python time per
step (everything under ``medsplit/``, not counting what it calls in torch).

    PYTHONPATH=. .venv/bin/python benchmarks/profile_step.py --steps 10 --rounds 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch's import; see split_runtime.py

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402

import torch  # noqa: E402

from benchmarks.ct_bench import LocalWorker, Mode, Setup, UnsplitWorker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = Setup(size=args.size, batch=args.batch, steps=args.steps)
    workers = {"unsplit": UnsplitWorker(setup), "local": LocalWorker(setup, Mode.parse("local"))}
    for w in workers.values():
        w.round()  # warm-up
    for name, w in workers.items():
        profile = cProfile.Profile()
        profile.enable()
        rounds = [w.round() for _ in range(args.rounds)]
        profile.disable()
        steps = args.steps * args.rounds
        print(f"## {name}: {sum(r.seconds for r in rounds) / steps * 1e3:.1f} ms per step (wall), "
              f"{sum(r.cpu for r in rounds) / steps * 1e3:.1f} ms CPU")
        stats = pstats.Stats(profile)
        own = sum(v[2] for k, v in stats.stats.items() if "/medsplit/" in k[0])  # type: ignore[attr-defined]
        print(f"   medsplit's own Python time: {own / steps * 1e3:.2f} ms per step")
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])


if __name__ == "__main__":
    main()
