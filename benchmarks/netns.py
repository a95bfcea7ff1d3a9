"""Hospitals' links on one machine: a network namespace per party, joined by a switch, each link rate-limited.

    with Lab(["server", "site_1"], rate="100mbit") as lab:
        lab.address("server")                      # 10.77.0.1, reachable from every party's namespace
        proc = lab.popen("site_1", ["python", ...])  # a process in site_1's namespace (its interface: eth0)
        lab.set_rate("1gbit")                       # every link, both directions

Each party's namespace holds ``lo`` and ``eth0`` (10.77.0.N/24); ``eth0``'s other end sits on a bridge in a
switch namespace. A ``tbf`` qdisc limits each link in both directions (upload on the party's ``eth0``,
download on its switch port). No delay is added (``netem`` is not available on these machines). Only root
can do this, with iproute2 (``ip``, ``tc``): ``why_not()`` says plainly what is missing. The lab removes
every namespace it made, and ends every process it started in them, when it exits, after an error, or
on SIGTERM/SIGINT; ``remove_stale()`` clears what a killed run (SIGKILL) left behind.

The same setup is where a test can watch what crosses between parties (``lab.capture``: tcpdump on a
switch port, if installed) to check that nothing crosses in clear.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

__all__ = ["Lab", "LabError", "why_not", "remove_stale", "PREFIX"]

PREFIX = "msplab"  # every namespace this module makes is named PREFIX-<pid>-<name>
SUBNET = "10.77.0"


class LabError(RuntimeError):
    """The lab cannot be set up here; the message says why and what to install or change."""


def why_not() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and tc need root (run as root, or in a container with CAP_NET_ADMIN)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found: install Debian's iproute2 (apt-get install iproute2)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip() or probe.returncode}"
    return None


def _run(cmd: Sequence[str], what: str) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"{what} failed: `{' '.join(cmd)}`: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_inside(ns: str) -> None:
    """Ends the processes in a namespace this module made (ours: started in it by a lab)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_stale() -> list[str]:
    """Removes the namespaces of labs whose process is gone (a run killed with SIGKILL); returns them."""
    removed = []
    for ns in _namespaces():
        parts = ns.split("-")
        if parts[0] != PREFIX or len(parts) < 3 or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # its lab is still running
        except ProcessLookupError:
            pass
        _kill_inside(ns)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        removed.append(ns)
    return removed


def _burst(rate: str) -> str:
    """tbf's bucket: 10 ms at the rate, at least 64 KB (a GSO segment must fit, or tbf drops it)."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}
    for suffix, scale in units.items():
        if rate.endswith(suffix):
            bits = float(rate[: -len(suffix)]) * scale
            return f"{max(int(bits / 8 / 100), 65536)}b"
    raise LabError(f"rate '{rate}' is not a tc rate", )


class Lab:
    """Namespaces for ``parties`` (the first gets 10.77.0.1, the next .2, ...), links limited to ``rate``."""

    def __init__(self, parties: Sequence[str], rate: str | None = None) -> None:
        reason = why_not()
        if reason:
            raise LabError(f"cannot build network namespaces: {reason}")
        if len(parties) > 250:
            raise LabError("a lab holds at most 250 parties (one /24)")
        self.parties = list(parties)
        self.tag = f"{PREFIX}-{os.getpid()}"
        self.switch = f"{self.tag}-switch"
        self.ns = {p: f"{self.tag}-{i}" for i, p in enumerate(self.parties)}
        self.rate = rate
        self.procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        self._old_handlers: dict[int, object] = {}

    # --- set up and tear down -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        atexit.register(self.close)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through __exit__, which removes everything

    def _build(self) -> None:
        for ns in [self.switch, *self.ns.values()]:
            _run(["ip", "netns", "add", ns], f"creating namespace {ns}")
            self._made.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"], f"bringing up lo in {ns}")
        _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"], "creating the switch")
        _run(["ip", "-n", self.switch, "link", "set", "br0", "up"], "bringing up the switch")
        for i, (party, ns) in enumerate(self.ns.items()):
            port = f"p{i}"
            _run(["ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns],
                 f"linking {party} to the switch")
            _run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"], f"plugging in {party}")
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(party)}/24", "dev", "eth0"], f"addressing {party}")
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"], f"bringing up {party}'s link")
        if self.rate:
            self.set_rate(self.rate)

    def close(self) -> None:
        """Ends every process started in the lab and removes its namespaces (idempotent)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        for ns in reversed(self._made):
            _kill_inside(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()
        atexit.unregister(self.close)

    # --- using it -----------------------------------------------------------------------------------

    def address(self, party: str) -> str:
        return f"{SUBNET}.{self.parties.index(party) + 1}"

    def prefix(self, party: str) -> list[str]:
        """The command prefix that runs a command in ``party``'s namespace."""
        return ["ip", "netns", "exec", self.ns[party]]

    def popen(self, party: str, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        """Starts ``cmd`` in ``party``'s namespace; the lab ends it when it closes."""
        proc = subprocess.Popen([*self.prefix(party), *cmd], **kwargs)
        self.procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen) -> None:
        """A process started elsewhere with ``prefix``: the lab ends it when it closes."""
        self.procs.append(proc)

    def set_rate(self, rate: str) -> None:
        """Limits every link to ``rate`` (a tc rate: 100mbit, 1gbit) in both directions."""
        burst = _burst(rate)
        for i, ns in enumerate(self.ns.values()):
            for where, dev in ((ns, "eth0"), (self.switch, f"p{i}")):
                _run(["tc", "-n", where, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", burst,
                      "latency", "100ms"], f"limiting {dev} in {where} to {rate} (the tbf qdisc)")
        self.rate = rate

    def capture(self, party: str, seconds: float, path: str) -> subprocess.Popen:
        """tcpdump of everything on ``party``'s switch port for ``seconds``, into ``path`` (pcap)."""
        if shutil.which("tcpdump") is None:
            raise LabError("tcpdump not found: install Debian's tcpdump to capture what crosses")
        port = f"p{self.parties.index(party)}"
        proc = subprocess.Popen(["ip", "netns", "exec", self.switch, "timeout", str(seconds), "tcpdump", "-i", port,
                                 "-w", path, "-U"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        time.sleep(0.5)  # tcpdump is listening before the caller sends
        return proc
