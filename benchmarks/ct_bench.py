"""The CT runtime benchmark's pieces: one model and data, and a worker per mode that trains it for a round.

Every split mode trains through the engine's one loop (``EpochLoop``): in this process with ``SplitTrainer``,
or as a site process and a server process, each running ``EpochLoop`` over ``party_executor`` with a node's
transport (gloo, rpc). A round is one epoch of ``steps`` steps; workers stay alive between rounds, so the
modes can take turns (``split_runtime.py`` interleaves them; ``netns_link.py`` puts the processes in network
namespaces). A process takes commands on stdin and answers on stdout, one JSON line each.

    python -m benchmarks.ct_bench party --party site --transport gloo --port P ...   (started by a worker)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medsplit import Party, Segment, SiteData, SplitTrainer, Task, TensorTable, Topology, split_sequential
from medsplit.engine import EpochLoop, PartyRunner
from medsplit.engine.metrics import task_loss
from medsplit.engine.units import party_executor
from medsplit.plan import Schedule, compile_topology
from medsplit.topology import conv_block
from medsplit.transport import NameTable, node_transport
from medsplit.transport.secure import Trust
from medsplit.wire import Meter, Wire, codec_chain

ROOT = Path(__file__).resolve().parents[1]
CUT = 2
RESULT = "@@result "  # prefix of a party process's answer on stdout (anything else there is a log line)


def ct_model() -> nn.Sequential:
    """A CNN for one CT slice (1 x S x S): two strided convolutions at the site, five more at the server."""
    return nn.Sequential(
        conv_block(2, 1, 16, 2), conv_block(2, 16, 32, 2),
        conv_block(2, 32, 64, 2), conv_block(2, 64, 64, 1), conv_block(2, 64, 128, 2), conv_block(2, 128, 128, 1),
        conv_block(2, 128, 128, 2), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 1))


def data(size: int, rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(rows, 1, size, size, generator=g), "y": (torch.rand(rows, generator=g) > 0.5).float()}


def topology(size: int, codecs: list[str] | None = None, devices: dict[str, str] | None = None,
             seed: int = 0) -> Topology:
    torch.manual_seed(seed)
    devices = devices or {}
    site, server = split_sequential(ct_model(), [CUT])
    return Topology("bench", [Party("site", data={"image": (1, size, size)}, labels=("y",),
                                    device=devices.get("site", "cpu")),
                              Party("server", "server", device=devices.get("server", "cpu"))],
                    [Segment("site.enc", "site", site, ("data:image",)),
                     Segment("server.rest", "server", server, ("site.enc",))],
                    [Task("t", "server.rest", "y", share_labels=True)], codecs={"*": codecs} if codecs else {})


def _adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class Mode:
    """A benchmark mode: ``unsplit``, or TRANSPORT[+pipeM][+CODEC...], e.g. ``gloo+pipe2+int8``."""

    name: str
    transport: str = ""
    micro_batches: int = 1
    codecs: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, name: str) -> Mode:
        if name == "unsplit":
            return cls(name)
        transport, *rest = name.split("+")
        if transport not in ("local", "gloo", "rpc"):
            raise SystemExit(f"unknown mode '{name}': use unsplit, or local, gloo or rpc with +pipeM and +CODEC")
        micro = [int(r[4:]) for r in rest if r.startswith("pipe")]
        codecs = [r for r in rest if not r.startswith("pipe")]
        if codecs:
            codec_chain(codecs)  # a bad name fails here, before any process starts
        return cls(name, transport, micro[0] if micro else 1, codecs)


@dataclass
class Setup:
    size: int = 256
    batch: int = 8
    steps: int = 10
    devices: dict[str, str] = field(default_factory=dict)


@dataclass
class Round:
    seconds: float  # wall time of the round's steps
    cpu: float  # CPU seconds (user + system) of every process of the mode over the round
    bytes: int = 0  # bytes that crossed the site's boundary in the round


class UnsplitWorker:
    """The whole model in this process, trained on the same batches (read the same way) as the split modes."""

    def __init__(self, setup: Setup) -> None:
        torch.manual_seed(0)
        device = torch.device(setup.devices.get("server", "cpu"))
        self.model, self.setup, self.device = ct_model().to(device), setup, device
        self.opt = _adam(self.model.parameters())
        self.table = TensorTable(data(setup.size, setup.steps * setup.batch))

    def round(self) -> Round:
        b = self.setup.batch
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(self.setup.steps):
            batch = self.table.batch(list(range(i * b, (i + 1) * b)))
            self.opt.zero_grad()
            x, y = batch["image"].to(self.device), batch["y"].to(self.device)
            task_loss("bce", self.model(x), y).backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return Round(time.perf_counter() - t0, time.process_time() - c0)

    def peak_mb(self) -> dict[str, float]:
        return {"main": peak_mb()}

    def close(self) -> None:
        pass


class LocalWorker:
    """Every party in this process (``SplitTrainer``, local transport); threaded when pipelined."""

    def __init__(self, setup: Setup, mode: Mode) -> None:
        d = data(setup.size, setup.steps * setup.batch)
        site = SiteData(TensorTable(d), TensorTable({k: v[:2] for k, v in d.items()}))
        self.trainer = SplitTrainer(topology(setup.size, mode.codecs, setup.devices), {"site": site},
                                    batch_size=setup.batch, shuffle=False, optimizer=_adam,
                                    micro_batches=mode.micro_batches,
                                    executor="threaded" if mode.micro_batches > 1 else "sequential")
        self._bytes = 0

    def round(self) -> Round:
        t0, c0 = time.perf_counter(), time.process_time()
        self.trainer.train_epoch()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a GPU party's last update may still be queued
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        b = self.trainer.meter.bytes_by_party("train").get("site", {"sent": 0, "received": 0})
        total = b["sent"] + b["received"]
        crossed, self._bytes = total - self._bytes, total
        return Round(seconds, cpu, crossed)

    def peak_mb(self) -> dict[str, float]:
        return {"main": peak_mb()}

    def close(self) -> None:
        self.trainer.transport.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessWorker:
    """A server process and a site process over a node transport, each running the engine's epoch loop.

    ``prefix`` wraps each party's command (``ip netns exec NS``); ``hosts`` gives the server's address as each
    party sees it and ``ifnames`` the interface each binds gloo to (namespaces); ``logs`` keeps their stderr.
    """

    def __init__(self, setup: Setup, mode: Mode, *, prefix: dict[str, list[str]] | None = None,
                 host: str = "127.0.0.1", port: int | None = None, ifnames: dict[str, str] | None = None,
                 logs: Path | None = None, timeout: float = 300.0) -> None:
        self.mode = mode
        port = port or free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        # The two parties share this machine's cores and take turns computing: OpenMP threads that spin after
        # their work (the default) would steal the cores of the party whose turn it is.
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = logs
        for party in ("server", "site"):
            cmd = [*(prefix or {}).get(party, []), sys.executable, "-m", "benchmarks.ct_bench", "party",
                   "--party", party, "--transport", mode.transport, "--host", host, "--port", str(port),
                   "--size", str(setup.size), "--batch", str(setup.batch), "--steps", str(setup.steps),
                   "--micro-batches", str(mode.micro_batches), "--timeout", str(timeout),
                   "--devices", json.dumps(setup.devices), "--codecs", *mode.codecs]
            penv = dict(env)
            if ifnames and party in ifnames:
                penv["GLOO_SOCKET_IFNAME"] = ifnames[party]
            err = open(logs / f"{mode.name}-{party}.log", "w") if logs else subprocess.DEVNULL  # noqa: SIM115
            self.procs[party] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                                 text=True, cwd=ROOT, env=penv)
            if party == "server":
                self._answer("server", "ready")  # the server hosts the rendezvous: the site connects to it
        self._answer("site", "ready")
        self._last: dict[str, dict] = {}

    def _answer(self, party: str, what: str) -> dict:
        proc = self.procs[party]
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT):])
        raise RuntimeError(f"{self.mode.name}: the {party} process ended before it was {what} (exit "
                           f"{proc.wait()}); see its log" + (f" in {self.logs}" if self.logs else ""))

    def _send(self, party: str, cmd: str) -> None:
        stdin = self.procs[party].stdin
        assert stdin is not None
        stdin.write(cmd + "\n")
        stdin.flush()

    def round(self) -> Round:
        for party in ("server", "site"):
            self._send(party, "round")
        got = {p: self._answer(p, "done with its round") for p in ("server", "site")}
        self._last = got
        # Both time the same steps; the site's clock covers each whole step (its forward to its update).
        return Round(got["site"]["seconds"], sum(g["cpu"] for g in got.values()), got["site"]["bytes"])

    def peak_mb(self) -> dict[str, float]:
        return {p: g["peak_mb"] for p, g in self._last.items()}

    def close(self) -> None:
        for party, proc in self.procs.items():
            if proc.poll() is None:
                try:
                    self._send(party, "stop")
                except OSError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def make_worker(setup: Setup, mode: Mode, **process_options) -> UnsplitWorker | LocalWorker | ProcessWorker:
    if mode.name == "unsplit":
        return UnsplitWorker(setup)
    if mode.transport == "local":
        return LocalWorker(setup, mode)
    return ProcessWorker(setup, mode, **process_options)


# --- a party process ---------------------------------------------------------------------------------

def _say(payload: dict) -> None:
    print(RESULT + json.dumps(payload), flush=True)


def party_main(args: argparse.Namespace) -> None:
    """One party of the split run: the engine's epoch loop over this party's units, a round per command."""
    setup = Setup(args.size, args.batch, args.steps, json.loads(args.devices))
    plan = compile_topology(topology(setup.size, args.codecs, setup.devices))
    peer = "server" if args.party == "site" else "site"
    transport = node_transport(args.transport, party=args.party, peers=[peer], names=NameTable.from_plan(plan),
                               host=args.host, port=args.port, is_host=args.party == "server", run_id="bench",
                               timeout=args.timeout, trust=Trust.shared(b"benchmark secret", [peer]), hub="server")
    if args.party == "server":
        _say({"ready": True})  # listening: the site may start
    transport.connect()
    meter = Meter()
    runner = PartyRunner(args.party, plan, Wire(transport, meter, plan.allowed(), timeout=args.timeout,
                                                codecs=plan.codecs), optimizer=_adam)
    site = None
    if args.party == "site":
        d = data(setup.size, setup.steps * setup.batch)
        site = SiteData(TensorTable(d), TensorTable({k: v[:2] for k, v in d.items()}))
        _say({"ready": True})
    schedule = Schedule(plan, {"site": (setup.steps * setup.batch, 2)}, setup.batch, 0, shuffle=False,
                        micro_batches=args.micro_batches)
    loop = EpochLoop(schedule, party_executor(runner, site))
    position = loop.start()
    crossed = 0
    for line in sys.stdin:
        if line.strip() != "round":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        loop.train_epoch(position)
        position.next_epoch(schedule.step)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        b = meter.bytes_by_party("train").get(args.party, {"sent": 0, "received": 0})
        _say({"seconds": seconds, "cpu": cpu, "bytes": b["sent"] + b["received"] - crossed, "peak_mb": peak_mb()})
        crossed = b["sent"] + b["received"]
    transport.flush()
    transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("party", help="run one party of the split benchmark (started by a ProcessWorker)")
    p.add_argument("--party", choices=["site", "server"], required=True)
    p.add_argument("--transport", default="gloo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--micro-batches", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--devices", default="{}")
    p.add_argument("--codecs", nargs="*", default=[])
    args = parser.parse_args()
    party_main(args)


if __name__ == "__main__":
    main()
