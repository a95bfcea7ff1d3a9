"""The engine's own cost per step, on a model too small to hide it: a split MLP against the same MLP unsplit.

With 16 features and a batch of 8 a step computes almost nothing, so the difference in time per step between
``SplitTrainer`` (every party in this process, local transport) and a plain PyTorch step is what the engine
adds per step: the op list, the Wire's checks, the meter, the boundary leaf and the second backward call,
two optimizers instead of one. Modes take turns in rounds as in ``split_runtime.py``.

    PYTHONPATH=. .venv/bin/python benchmarks/engine_overhead.py --steps 200 --rounds 15
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch's import; see split_runtime.py

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.ct_bench import Round  # noqa: E402
from benchmarks.rounds import run_rounds, summarize  # noqa: E402
from medsplit import Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential  # noqa: E402
from medsplit.engine.metrics import task_loss  # noqa: E402

# The hidden layer is wider than the input: a cut of the raw input's shape is refused by the compiler (a site
# could send the raw input itself), so the cut after the first layer must change the shape.
FEATURES, HIDDEN, BATCH = 16, 32, 8


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))


def _data(steps: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rows = steps * BATCH
    return {"x": torch.randn(rows, FEATURES, generator=g), "y": (torch.rand(rows, generator=g) > 0.5).float()}


class Unsplit:
    def __init__(self, steps: int) -> None:
        self.model, self.steps = _model(), steps
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.table = TensorTable(_data(steps))

    def round(self) -> Round:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(self.steps):
            b = self.table.batch(list(range(i * BATCH, (i + 1) * BATCH)))
            self.opt.zero_grad()
            task_loss("bce", self.model(b["x"]), b["y"]).backward()
            self.opt.step()
        return Round(time.perf_counter() - t0, time.process_time() - c0)

    def peak_mb(self) -> dict[str, float]:
        return {}


class Split:
    def __init__(self, steps: int, executor: str) -> None:
        site, server = split_sequential(_model(), [2])
        topo = Topology("tiny", [Party("site", data={"x": (FEATURES,)}, labels=("y",)), Party("server", "server")],
                        [Segment("site.enc", "site", site, ("data:x",)),
                         Segment("server.rest", "server", server, ("site.enc",))],
                        [Task("t", "server.rest", "y", share_labels=True)])
        d = _data(steps)
        site_data = SiteData(TensorTable(d), TensorTable({k: v[:2] for k, v in d.items()}))
        self.trainer = SplitTrainer(topo, {"site": site_data}, batch_size=BATCH, shuffle=False,
                                    executor=executor)  # type: ignore[arg-type]

    def round(self) -> Round:
        t0, c0 = time.perf_counter(), time.process_time()
        self.trainer.train_epoch()
        return Round(time.perf_counter() - t0, time.process_time() - c0)

    def peak_mb(self) -> dict[str, float]:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workers = {"unsplit": Unsplit(args.steps), "local": Split(args.steps, "sequential"),
               "local, a thread per party": Split(args.steps, "threaded")}
    rounds = run_rounds(workers, "unsplit", min_rounds=args.rounds, max_rounds=args.rounds, spread=0.0,
                        log=lambda line: None)
    rows = summarize(rounds, workers, "unsplit", args.steps, 0.03, args.rounds)
    base = rows["unsplit"]
    print(f"# MLP {FEATURES}-{HIDDEN}-1 cut after the first layer, batch {BATCH}; {args.rounds} rounds of "
          f"{args.steps} steps; load average {os.getloadavg()[0]:.2f}")
    print("| mode | µs per step (median over rounds) | CPU µs per step | engine's own µs per step (vs unsplit) |")
    print("|---|---|---|---|")
    for mode, r in rows.items():
        extra = (r["seconds_per_step"] - base["seconds_per_step"]) * 1e6
        print(f"| {mode} | {r['seconds_per_step'] * 1e6:.0f} | {r['cpu_seconds_per_step'] * 1e6:.0f} | "
              f"{'-' if mode == 'unsplit' else f'{extra:.0f}'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
