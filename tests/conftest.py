"""Shared fixtures: deterministic torch, small synthetic cohorts, the one config error format, a study's own package."""

from __future__ import annotations

import os
import re
import sys
import textwrap

import pytest
import torch

from medsplit.errors import ConfigError

#: every config error: ``FILE: KEY: PROBLEM`` and the fix on its own line (medsplit.config.loader)
_ONE_FORMAT = re.compile(r"^(?P<file>[^\n]+?): (?P<key>[^\n:]+): (?P<problem>[^\n]+)\n  fix: (?P<fix>[^\n]+)$")


@pytest.fixture
def one_format():
    """Split a ConfigError into file, key, problem and fix; the test fails when it is not in the one format."""

    def split(exc: ConfigError) -> re.Match:
        match = _ONE_FORMAT.match(str(exc))
        assert match, f"not in the one format: {exc!s}"
        return match

    return split


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class LoopbackCapture:
    """Every TCP payload byte on the loopback interface while it runs, per flow, through a raw packet socket.

    ``flows``: (src port, dst port) -> bytes in arrival order. Needs CAP_NET_RAW (root, as here and in CI).
    Bounded: it stops keeping bytes past ``limit``, and its thread ends with ``stop()``. Other programs on this
    machine use loopback too: ``track(pid)`` notes the TCP ports of a process of the test while it runs, and
    ``find(..., ours=True)`` looks only at flows with one end on such a port.
    """

    def __init__(self, limit: int = 512 << 20) -> None:
        import socket
        import struct
        import threading

        self._struct, self.limit, self.total = struct, limit, 0
        self.flows: dict[tuple[int, int], bytearray] = {}
        self.pids: set[int] = set()
        self.ports: set[int] = set()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        # A large buffer (SO_RCVBUFFORCE, as root): loopback moves far faster than this thread reads.
        self._sock.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def track(self, pid: int) -> None:
        self.pids.add(pid)

    def _sample(self) -> None:
        import os

        while not self._stop.is_set():
            inodes = set()
            for pid in list(self.pids):
                try:
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        link = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if link.startswith("socket:["):
                            inodes.add(link[8:-1])
                except OSError:
                    continue
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                try:
                    lines = open(table).read().splitlines()[1:]
                except OSError:
                    continue
                for line in lines:
                    f = line.split()
                    if len(f) > 9 and f[9] in inodes:
                        self.ports.add(int(f[1].rsplit(":", 1)[1], 16))
            self._stop.wait(0.05)

    def _run(self) -> None:
        unpack = self._struct.unpack_from
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(1 << 17)
            except OSError:
                continue
            if addr[2] == 4:  # PACKET_OUTGOING: loopback shows every packet twice
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:  # IPv4 TCP only (medsplit binds 127.0.0.1)
                continue
            ihl = (ip[0] & 0xF) * 4
            total = unpack("!H", ip, 2)[0]
            tcp = ip[ihl:total]
            sport, dport = unpack("!HH", tcp, 0)
            payload = tcp[(tcp[12] >> 4) * 4:]
            if payload and self.total < self.limit:
                self.flows.setdefault((sport, dport), bytearray()).extend(payload)
                self.total += len(payload)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sampler.join(5)
        self._sock.close()

    def find(self, needle: bytes, ours: bool = True) -> list[tuple[int, int]]:
        """The flows whose bytes contain ``needle`` (with ``ours``: only flows of the tracked processes)."""
        return [flow for flow, data in self.flows.items()
                if needle in data and (not ours or self.ports & set(flow))]


@pytest.fixture
def loopback_capture():
    """A running ``LoopbackCapture`` (stopped at teardown); skipped, saying why, without CAP_NET_RAW."""
    try:
        cap = LoopbackCapture()
    except PermissionError:
        pytest.skip("capturing loopback traffic needs CAP_NET_RAW (root); this machine does not grant it")
    yield cap
    cap.stop()


@pytest.fixture
def outside_package(tmp_path, monkeypatch):
    """A package outside the project, as a study would install at every party."""
    pkg = tmp_path / "outside" / "mystudy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "topologies.py").write_text(textwrap.dedent('''
        import torch
        from medsplit import Party, Segment, Task, Topology

        def build(study, knobs):
            site = study.sites[0]
            (key, shape), = site.data.items()
            return Topology("mine", [Party(site.party, data=dict(site.data), labels=site.labels),
                                     Party("server", "server")],
                            [Segment(f"{site.party}.enc", site.party, torch.nn.Sequential(
                                torch.nn.Flatten(), torch.nn.Linear(shape[0], knobs.hidden), torch.nn.ReLU()),
                                (f"data:{key}",)),
                             Segment("server.head", "server", torch.nn.Linear(knobs.hidden, 1),
                                     (f"{site.party}.enc",))],
                            [Task(t.name, "server.head", t.label, share_labels=True) for t in study.tasks])

        def not_a_topology(study, knobs):
            return 42

        def encoder(shape, out):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(shape[0], out))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path / "outside"))
    # installed at every party: the processes a test starts import it too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "outside"),
                                                                  os.environ.get("PYTHONPATH")])))
    yield
    for name in [m for m in sys.modules if m.startswith("mystudy")]:
        del sys.modules[name]
