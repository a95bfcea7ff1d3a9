"""The namespace lab of the link benchmarks: parties on their own addresses, a rate that holds, nothing left behind."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks/ is not installed

from benchmarks.netns import PREFIX, Lab, LabError, why_not  # noqa: E402

# Like a GPU test without a GPU: namespaces need root and iproute2, which a developer's laptop may lack.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(why_not() is not None, reason=f"no network namespaces: {why_not()}")]

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5001)); s.listen()
print("listening", flush=True)
c, peer = s.accept(); n = 0
while (b := c.recv(1 << 20)):
    n += len(b)
print(n, peer[0], flush=True)
"""
CLIENT = ("import socket, sys; s = socket.create_connection((sys.argv[1], 5001), timeout=10); "
          "s.sendall(b'x' * int(sys.argv[2]))")


def _ours() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def _send(lab: Lab, src: str, dst: str, nbytes: int) -> tuple[int, str, float]:
    server = lab.popen(dst, [sys.executable, "-c", SERVER, lab.address(dst)], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    t0 = time.monotonic()
    subprocess.run([*lab.prefix(src), sys.executable, "-c", CLIENT, lab.address(dst), str(nbytes)], check=True,
                   timeout=60)
    got, peer = server.stdout.readline().split()
    return int(got), peer, time.monotonic() - t0


def test_parties_talk_on_their_own_addresses_at_the_links_rate():
    before = _ours()
    with Lab(["server", "site_1", "site_2"], rate="40mbit") as lab:
        assert lab.address("server") == "10.77.0.1" and lab.address("site_2") == "10.77.0.3"
        assert len(_ours()) == len(before) + 4  # three parties and the switch
        got, peer, seconds = _send(lab, "site_2", "server", 2_000_000)
        assert got == 2_000_000 and peer == "10.77.0.3"  # the server sees the site's own address
        mbit = got * 8 / seconds / 1e6
        assert 20 < mbit < 44, mbit  # the tbf limit holds (python start-up counts against it, hence the low bound)
        lab.set_rate("400mbit")
        got, _, fast = _send(lab, "site_1", "server", 2_000_000)
        assert fast < seconds / 2
        # A party has a network of its own: this machine's loopback (where a listener waits) is not its loopback.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
            assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
            inside = subprocess.run([*lab.prefix("site_1"), sys.executable, "-c", probe], capture_output=True)
            assert inside.returncode != 0 and b"Connection refused" in inside.stderr
    assert _ours() == before


def test_everything_is_removed_after_an_error_and_its_processes_end():
    before = _ours()
    with pytest.raises(RuntimeError, match="boom"):
        with Lab(["server", "site"]) as lab:
            sleeper = lab.popen("site", ["sleep", "300"])
            raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert _ours() == before


def test_a_bad_rate_is_refused_and_cleaned_up():
    before = _ours()
    with pytest.raises(LabError, match="not a tc rate"):
        with Lab(["server", "site"], rate="fast"):
            pass
    assert _ours() == before
