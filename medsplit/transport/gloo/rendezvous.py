"""Where two gloo ends meet: the host's store, each pair's generation counter, the group, and the handshake on it.

The store is public (anyone who reaches its port can read and write it), so it holds only what an outsider
may see: addresses, generation counters, and which process joined a generation. Who is at the other end of a
group is decided by the handshake on the group itself (``secure/handshake.py``), never by the store.
"""

from __future__ import annotations

import os
import time
import uuid

import torch
from torch.distributed import PrefixStore, ProcessGroupGloo, TCPStore

from ...errors import TransportError
from ..secure import FRAME, Channel, PairContext, Trust, handshake
from .pair import TAG_HANDSHAKE, first_line, td

__all__ = ["open_store", "choose_generation", "make_group", "secure_group"]


def open_store(party: str, host: str, port: int, is_host: bool, base: str, timeout: float) -> tuple[TCPStore, str]:
    """The store (hosted here, or a client of the host's) and the id of the host's store instance."""
    try:
        store = TCPStore(host, port, None, is_host, td(timeout), wait_for_workers=False)
    except Exception as exc:  # c10d raises RuntimeError/DistNetworkError/TimeoutError
        if is_host:
            raise TransportError(f"party '{party}' could not host the rendezvous store on {host}:{port}: "
                                 f"{first_line(exc)}",
                                 hint="choose a free port, or stop the process that holds it") from exc
        raise TransportError(f"party '{party}' could not reach the rendezvous store at {host}:{port} within "
                             f"{timeout:.0f} s: {first_line(exc)}",
                             hint="start the server first (it hosts the store), and check that this address and "
                                  "port are reachable from this site") from exc
    key = f"{base}/store_id"
    if is_host:
        store.set("medsplit/hosted", base.split("/", 1)[1])
        store.set(key, uuid.uuid4().hex)
    try:
        return store, store.get(key).decode()
    except Exception as exc:
        hosted = ""
        try:
            if store.check(["medsplit/hosted"]):
                hosted = f"; it hosts run '{store.get('medsplit/hosted').decode()[:100]}'"
        except Exception:  # noqa: BLE001, S110 - the store went away meanwhile
            pass
        raise TransportError(f"party '{party}' reached the store at {host}:{port} but run '{base.split('/', 1)[1]}' "
                             f"is not hosted there{hosted}",
                             hint="start this party with the experiment file the server runs (its name selects "
                                  "the run)") from exc


def choose_generation(store: TCPStore, pair_key: str, party: str, token: str, moved_from: int | None) -> int:
    """The generation to join: past ``moved_from`` (the last one this process joined, or tried), else the
    counter's value unless an earlier life of this party joined it (then this is a restart: the next one)."""
    counter = f"{pair_key}/generation"
    if moved_from is not None:
        got = int(store.compare_set(counter, str(moved_from), str(moved_from + 1)))
        if got > moved_from:
            return got
    got = int(store.compare_set(counter, "", "0"))
    marker = f"{pair_key}/gen{got}/joined/{party}"
    if store.check([marker]) and store.get(marker).decode() != token:
        got = int(store.compare_set(counter, str(got), str(got + 1)))
    return got


def make_group(store: TCPStore, prefix: str, rank: int, timeout: float, local_addr: str | None) -> ProcessGroupGloo:
    opts = ProcessGroupGloo._Options()  # type: ignore[attr-defined]  # untyped in torch
    opts._timeout = td(timeout)
    if local_addr:
        device = ProcessGroupGloo.create_device(hostname=local_addr)
    elif os.environ.get("GLOO_SOCKET_IFNAME"):  # create_default_device() does not read it
        device = ProcessGroupGloo.create_device(interface=os.environ["GLOO_SOCKET_IFNAME"])
    else:
        device = ProcessGroupGloo.create_default_device()
    opts._devices = [device]
    return ProcessGroupGloo(PrefixStore(prefix, store), rank, 2, opts)


def secure_group(pg: ProcessGroupGloo, peer_rank: int, ctx: PairContext, trust: Trust, timeout: float) -> Channel:
    """The handshake over a fresh group, every frame within the time left of ``timeout``."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransportError(f"the handshake with '{ctx.peer}' did not complete within {timeout:.0f} s")
        return remaining

    def send(data: bytes) -> None:
        frame = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        pg.send([frame], peer_rank, TAG_HANDSHAKE).wait(td(left()))  # type: ignore[attr-defined]

    def recv() -> bytes:
        buf = torch.zeros(FRAME, dtype=torch.uint8)
        try:
            pg.recv([buf], peer_rank, TAG_HANDSHAKE).wait(td(left()))  # type: ignore[attr-defined]
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 - gloo's timeout or a reset socket
            raise TransportError(f"'{ctx.peer}' left during the handshake: {first_line(exc)}") from exc
        return buf.numpy().tobytes()

    return handshake(send, recv, ctx, trust)
