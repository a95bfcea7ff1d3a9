"""One party in its own process, for the transport tests: connects, then obeys JSON commands on stdin.

Every reply is one JSON line on stdout. A watchdog ends the process if its test forgets it.
Run: python _party.py --transport gloo --party site-a --peers server --parties ... --edges ... --port P
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import torch
from torch import nn

from medsplit.transport import NameTable
from medsplit.transport.gloo import GlooTransport
from medsplit.transport.gloo.pair import _HEADER, _PAYLOAD, _TAG_HEADER, _TAG_PAYLOAD
from medsplit.transport.header import Header, encode
from medsplit.transport.rpc import RpcTransport
from medsplit.transport.secure import Trust
from medsplit.wire import Expect, Kind, Message, Wire
from medsplit.wire.meter import Meter

WIRE_EDGE = "enc->head"


def make_tensor(spec: dict) -> torch.Tensor:
    """The same tensor in every process, from {"dtype", "shape", "seed"}."""
    g = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    dtype = getattr(torch, spec["dtype"])
    shape = tuple(spec["shape"])
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    return torch.randint(0, 256 if dtype is torch.uint8 else 1000, shape, generator=g).to(dtype)


def wire_models() -> tuple[nn.Module, nn.Module]:
    """The site's encoder and the server's head of the end-to-end test, the same at both ends."""
    torch.manual_seed(1)
    enc = nn.Sequential(nn.Linear(6, 4), nn.Tanh())
    torch.manual_seed(2)
    head = nn.Linear(4, 1)
    return enc, head


def wire_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return (make_tensor({"dtype": "float32", "shape": [5, 6], "seed": 11}),
            make_tensor({"dtype": "float32", "shape": [5, 1], "seed": 12}))


def wire_allowed(site: str, server: str) -> set:
    return {(WIRE_EDGE, Kind.ACTIVATION, site, server), (WIRE_EDGE, Kind.GRADIENT, server, site)}


def wire_site(transport, party: str, server: str, timeout: float) -> dict:
    """The site's half of one split step over ``Wire``, checked against the unsplit gradient."""
    enc, head = wire_models()
    x, y = wire_batch()
    meter = Meter()
    wire = Wire(transport, meter, wire_allowed(party, server), timeout=timeout)
    act = enc(x)
    wire.send(Message(1, WIRE_EDGE, Kind.ACTIVATION, party, server, act))
    grad = wire.recv(Expect(1, WIRE_EDGE, Kind.GRADIENT, server, party, tuple(act.shape), torch.float32, exact=True))
    act.backward(grad)
    split = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    nn.functional.mse_loss(head(enc(x)), y).backward()
    diff = max(float((a - p.grad).abs().max()) for a, p in zip(split, enc.parameters(), strict=True))
    return {"event": "wire_done", "max_diff": diff, "bytes": meter.bytes_by_party()}


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", choices=("gloo", "rpc"), default="gloo")
    ap.add_argument("--party", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--parties", required=True)
    ap.add_argument("--edges", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--is-host", action="store_true")
    ap.add_argument("--run-id", default="test")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--watchdog", type=float, default=60.0)
    ap.add_argument("--secret", default="test-secret", help="the pair secret every party of the test shares")
    ap.add_argument("--hub", default="server", help="the party that proves itself first in its pairs")
    args = ap.parse_args()
    watchdog = threading.Timer(args.watchdog, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    names = NameTable(args.parties.split(","), args.edges.split(","))
    cls = GlooTransport if args.transport == "gloo" else RpcTransport
    kw = {"trust": Trust.shared(args.secret.encode(), args.peers.split(",")), "hub": args.hub} \
        if args.transport == "gloo" else {}
    t = cls(args.party, args.peers.split(","), names, args.host, args.port, args.is_host, args.run_id,
            timeout=args.timeout, **kw)
    emit({"event": "port", "port": t.port})
    try:
        t.connect()
    except Exception as exc:  # noqa: BLE001 - reported to the test (an impostor's connection is refused)
        emit({"event": "error", "type": type(exc).__name__, "message": str(exc)})
        return
    gens = {p: t.generation(p) for p in t.peers} if args.transport == "gloo" else {}
    emit({"event": "connected", "generation": gens, "pid": os.getpid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        t0 = time.perf_counter()
        try:
            if op == "send":
                for i, spec in enumerate(cmd["specs"]):
                    t.send(Message(cmd["step"] + i, cmd["edge"], Kind(cmd.get("kind", "activation")), args.party,
                                   cmd["to"], make_tensor(spec), cmd.get("phase", "train")))
                emit({"event": "sent", "count": len(cmd["specs"]), "seconds": time.perf_counter() - t0})
            elif op == "recv":
                got = []
                for spec in cmd["specs"]:
                    m = t.recv(cmd["from"], args.party, timeout=cmd.get("timeout", args.timeout),
                               awaiting=cmd.get("awaiting", "a test message"))
                    got.append({"step": m.step, "edge": m.edge, "kind": m.kind.value, "phase": m.phase,
                                "equal": bool(m.tensor.dtype == make_tensor(spec).dtype
                                              and torch.equal(m.tensor, make_tensor(spec)))})
                emit({"event": "received", "messages": got})
            elif op == "raw_header":  # a header sealed with this pair's keys, as a faulty or hostile peer would
                pair = t._pairs[cmd["to"]]
                with pair.lock:
                    values = torch.tensor(cmd["values"], dtype=torch.int64)
                    sealed = pair.channel.seal(_HEADER, values.view(torch.uint8))
                    pair.pg.send([sealed], pair.peer_rank, _TAG_HEADER).wait()
                emit({"event": "sent", "count": 1})
            elif op == "raw_frames":  # bytes on the pair as they are, unsealed (what an intruder could inject)
                pair = t._pairs[cmd["to"]]
                for tag, data in cmd["frames"]:
                    pair.pg.send([torch.tensor(data, dtype=torch.uint8)], pair.peer_rank, tag).wait()
                emit({"event": "sent", "count": len(cmd["frames"])})
            elif op == "short_payload":  # a sealed header announcing more bytes than the sealed payload holds
                pair = t._pairs[cmd["to"]]
                h = Header(cmd["step"], cmd["edge"], Kind.ACTIVATION, args.party, cmd["to"], "train", torch.float32,
                           tuple(cmd["shape"]))
                plain = encode(h, names)
                body = torch.zeros(cmd["payload_bytes"], dtype=torch.uint8)
                with pair.lock:
                    frames = (pair.channel.seal(_HEADER, plain.view(torch.uint8)),
                              pair.channel.seal(_PAYLOAD, body, extra=plain.numpy().tobytes()))
                    for tag, f in zip((_TAG_HEADER, _TAG_PAYLOAD), frames, strict=True):
                        pair.pg.send([f], pair.peer_rank, tag).wait()
                emit({"event": "sent", "count": 1})
            elif op == "flush":
                t.flush()
                emit({"event": "flushed"})
            elif op == "reconnect":
                emit({"event": "reconnected", "generation": t.reconnect(cmd["peer"])})
            elif op == "wire_site":
                emit(wire_site(t, args.party, cmd["server"], cmd.get("timeout", args.timeout)))
            elif op == "close":
                t.close(cmd.get("reason"))
                emit({"event": "closed"})
            elif op == "exit":
                t.close()
                emit({"event": "exiting"})
                break
            elif op == "quit":  # leave without close(): the transport must still let the process exit cleanly
                emit({"event": "exiting"})
                break
            else:
                emit({"event": "error", "type": "unknown", "message": op})
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            emit({"event": "error", "type": type(exc).__name__, "message": str(exc),
                  "seconds": time.perf_counter() - t0})
    # A normal interpreter exit, on purpose: a transport thread left inside gloo would abort it (rc != 0).


if __name__ == "__main__":
    main()
