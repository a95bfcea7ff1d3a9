"""Party processes forked from one parent that imported torch and medsplit once: many sites on one machine.

A node process holds little of its own; most of its memory is what it imports (torch alone is about 130 MB
that two processes do not share when each imports it itself). Forked from a parent that has imported
``sites.cli`` (multiprocessing's forkserver), the processes share those pages copy-on-write and each keeps
only what it writes. For simulating many sites on one machine (``run_processes(share_imports=True)``); a
deployment runs each party on its own machine. The parent imports and never computes, so no OpenMP or gloo
thread exists when it forks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.context import ForkServerContext
from pathlib import Path

__all__ = ["ForkedProcess"]

_CONTEXT: ForkServerContext | None = None


def _context() -> ForkServerContext:
    global _CONTEXT
    if _CONTEXT is None:
        # The fork server starts with this process's environment: OpenMP reads its settings when torch loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        _CONTEXT = mp.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["sites._preload"])
    return _CONTEXT


def _node(argv: list[str], log: str, env: dict[str, str]) -> None:
    os.setsid()  # its own process group, as start_new_session gives a Popen child
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    from sites.cli import main

    try:
        code = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


class ForkedProcess:
    """``medsplit ARGV`` in a process forked from the preloaded parent; the part of ``subprocess.Popen`` that
    ``run_processes`` uses (``pid``, ``poll``, ``wait``, ``returncode``)."""

    def __init__(self, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> None:
        self._proc = _context().Process(target=_node, args=(list(argv), str(log), dict(env)), daemon=False)
        self._proc.start()
        assert self._proc.pid is not None  # set by start()
        self.pid: int = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(f"medsplit node (pid {self.pid})", timeout or 0)
        return self._proc.exitcode
