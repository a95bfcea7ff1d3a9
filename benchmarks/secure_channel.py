"""What sealing costs: one split training step over gloo between two processes, with and without encryption.

In one run of this script, for each activation size: a site process and a server process train the same split
CNN for ``--steps`` steps over GlooTransport, (a) as shipped: every header and payload sealed with AES-256-GCM,
(b) with the channel's cipher swapped for a plain copy (``_PlainChannel``: same framing, same copies, no
encryption; a benchmark-only stand-in, never selectable in medsplit). The two alternate ``--rounds`` times and
the fastest of each is kept. Reports seconds per step for both, their difference, and in (a) the time spent
sealing and opening per step (both ends added), measured inside the channel, as a share of the step: on a
shared machine the last is the steadier measure of what encryption costs.

    PYTHONPATH=. .venv/bin/python benchmarks/secure_channel.py --steps 20 --sizes 64 128 256 --batch-size 16 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import socket
import sys
import time
from pathlib import Path

import torch
from torch import nn

from medsplit import Party, Segment, Task, Topology, split_sequential
from medsplit.engine.party import PartyRunner, Unit
from medsplit.plan import Schedule, compile_topology
from medsplit.topology import conv_block
from medsplit.transport import NameTable, node_transport
from medsplit.transport.secure import TAG, Trust
from medsplit.transport.secure import channel as channel_module
from medsplit.wire import Meter, Wire

WARMUP = 5


def topology(size: int) -> Topology:
    """Two strided convolutions at the site (a 32 x S/4 x S/4 cut), the rest at the server."""
    torch.manual_seed(0)
    model = nn.Sequential(conv_block(2, 1, 16, 2), conv_block(2, 16, 32, 2), conv_block(2, 32, 64, 2),
                          conv_block(2, 64, 64, 2), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 1))
    site, server = split_sequential(model, [2])
    return Topology("bench", [Party("site", data={"image": (1, size, size)}, labels=("y",)), Party("server", "server")],
                    [Segment("site.enc", "site", site, ("data:image",)),
                     Segment("server.rest", "server", server, ("site.enc",))],
                    [Task("t", "server.rest", "y", share_labels=True)])


class _PlainChannel(channel_module.Channel):
    """The same frames and copies as ``Channel``, without the cipher: the baseline for what encryption costs."""

    def seal(self, purpose: bytes, data: torch.Tensor | bytes, extra: bytes = b"") -> torch.Tensor:
        src = data if isinstance(data, torch.Tensor) else torch.frombuffer(bytearray(data), dtype=torch.uint8)
        out = torch.empty(src.numel() + TAG, dtype=torch.uint8)
        out[:src.numel()].copy_(src)
        return out

    def open(self, purpose: bytes, sealed: torch.Tensor, extra: bytes = b"", *, what: str = "a frame") -> torch.Tensor:
        return sealed[:sealed.numel() - TAG].clone()


class _Timed(channel_module.Channel):
    """``Channel`` that adds up the seconds spent sealing and opening (class-wide, per process)."""

    seconds = 0.0

    def seal(self, *args, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return super().seal(*args, **kw)
        finally:
            _Timed.seconds += time.perf_counter() - t0

    def open(self, *args, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return super().open(*args, **kw)
        finally:
            _Timed.seconds += time.perf_counter() - t0


def _party(name: str, mode: str, port: int, size: int, steps: int, batch: int, queue) -> None:
    torch.set_num_threads(1)
    cls = _PlainChannel if mode == "plain" else _Timed
    # The handshake's verdict and every frame after it go through the swapped class. (The package exports a
    # function named like the module, so the module is taken from sys.modules.)
    sys.modules["medsplit.transport.secure.handshake"].Channel = cls
    plan = compile_topology(topology(size))
    peer = "server" if name == "site" else "site"
    transport = node_transport("gloo", party=name, peers=[peer], names=NameTable.from_plan(plan), host="127.0.0.1",
                               port=port, is_host=name == "server", run_id="bench", timeout=120,
                               trust=Trust.shared(b"benchmark secret", [peer]), hub="server")
    transport.connect()
    runner = PartyRunner(name, plan, Wire(transport, Meter(), plan.allowed(), timeout=120),
                         optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g)
    y = (torch.rand(batch, generator=g) > 0.5).float()
    schedule = Schedule(plan, {"site": (WARMUP + steps, 2)}, 1, 0, shuffle=False)
    t0 = sealed0 = None
    for i, specs in enumerate(schedule.train_epoch(0)):
        if i == WARMUP:
            t0, sealed0 = time.perf_counter(), _Timed.seconds
        runner.run_unit(Unit(specs[0], {name: {"image": x, "y": y}} if name == "site" else {}))
    seconds = (time.perf_counter() - t0) / steps
    transport.flush()
    queue.put({"party": name, "seconds_per_step": seconds, "crypto_per_step": (_Timed.seconds - sealed0) / steps})
    time.sleep(0.5)
    transport.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(mode: str, size: int, steps: int, batch: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_party, args=(p, mode, port, size, steps, batch, queue)) for p in ("server", "site")]
    for p in procs:
        p.start()
        time.sleep(0.5 if p is procs[0] else 0)
    out = {r["party"]: r for r in (queue.get(timeout=900) for _ in procs)}
    for p in procs:
        p.join(60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image side S; the cut is 32 x S/4 x S/4")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="sealed and plain runs alternate this many times; "
                                                         "the fastest of each is kept (a shared machine is noisy)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        runs = {"sealed": [], "plain": []}
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(run(mode, size, args.steps, args.batch_size))
        sealed = min(runs["sealed"], key=lambda r: r["site"]["seconds_per_step"])
        plain = min(runs["plain"], key=lambda r: r["site"]["seconds_per_step"])
        cut_mb = args.batch_size * 32 * (size // 4) ** 2 * 4 / 1e6
        s, p = sealed["site"]["seconds_per_step"], plain["site"]["seconds_per_step"]
        crypto = sealed["site"]["crypto_per_step"] + sealed["server"]["crypto_per_step"]
        rows.append({"size": size, "activation_mb": cut_mb, "sealed_s": s, "plain_s": p, "overhead": s / p - 1,
                     "crypto_s": crypto, "crypto_share": crypto / s})
    print(f"{platform.node()}: torch {torch.__version__}, {torch.get_num_threads()} threads available, "
          f"{args.steps} steps, batch {args.batch_size}")
    print("| image | cut activation MB | s/step sealed | s/step plain | difference | seal+open s/step (both ends) "
          "| seal+open share of the step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['activation_mb']:.2f} | {r['sealed_s']:.4f} | {r['plain_s']:.4f} | "
              f"{100 * r['overhead']:+.1f}% | {r['crypto_s']:.4f} | {100 * r['crypto_share']:.1f}% |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
