"""Real processes for the transport tests: each child runs ``_party.py`` and is ended by PID at teardown."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DRIVER = HERE / "_party.py"


def _load_driver():
    spec = importlib.util.spec_from_file_location("medsplit_transport_test_party", DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Child:
    """A party process: send it commands, read its JSON replies, each wait bounded."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), *args], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self._lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line)

    def cmd(self, op: str, **kw) -> None:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"pid {self.pid}: no '{event}' within {timeout} s; "
                                     f"stderr:\n{''.join(self.stderr)[-3000:]}") from None
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours (a library printing to stdout)
            if obj.get("event") != event:
                raise AssertionError(f"pid {self.pid}: expected '{event}', got {obj}; "
                                     f"stderr:\n{''.join(self.stderr)[-3000:]}")
            return obj

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def finish(self, timeout: float = 20.0) -> int:
        """Waits for a normal exit; returns the exit status (0 when the interpreter shut down cleanly)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"pid {self.pid} did not exit within {timeout} s") from None


@pytest.fixture(scope="session")
def driver():
    """The driver module itself, for the tensors and models both ends must agree on."""
    return _load_driver()


@pytest.fixture
def spawn():
    """spawn(*args) -> Child; every child still running at teardown is SIGKILLed by its PID."""
    children: list[Child] = []

    def start(*args: str) -> Child:
        child = Child(list(args))
        children.append(child)
        return child

    yield start
    for child in children:
        if child.proc.poll() is None:
            child.kill()
        for stream in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


@pytest.fixture
def closing():
    """Register transports made in the test process; they are closed at teardown even if the test fails."""
    transports: list = []
    yield transports.append
    for t in transports:
        t.close("test over")
