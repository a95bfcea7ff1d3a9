"""Shared fixtures for the data adapter tests: synthetic cohorts written once per session."""

from __future__ import annotations

import queue
import threading

import pytest

from data_adapters.synth import synth_cohort


@pytest.fixture(scope="session")
def horizontal(tmp_path_factory):
    """3 sites x 30 patients, CT 32x32 + EHR + labels at every site."""
    return synth_cohort(tmp_path_factory.mktemp("horizontal"), sites=3, patients=30, seed=11)


@pytest.fixture(scope="session")
def vertical(tmp_path_factory):
    """site_1 CT, site_2 EHR + labels; 40 patients each, 80% shared."""
    return synth_cohort(tmp_path_factory.mktemp("vertical"), sites=2, patients=40, seed=5, layout="vertical")


class _Wire:
    """Two in-memory queues between a pair of parties; records every message for inspection."""

    def __init__(self) -> None:
        self.a2b: queue.Queue[bytes] = queue.Queue()
        self.b2a: queue.Queue[bytes] = queue.Queue()
        self.log: list[bytes] = []

    def _send(self, q):
        def send(msg: bytes) -> None:
            assert isinstance(msg, bytes)
            self.log.append(msg)
            q.put(msg)
        return send

    def a(self):
        return self._send(self.a2b), lambda: self.b2a.get(timeout=30)

    def b(self):
        return self._send(self.b2a), lambda: self.a2b.get(timeout=30)


def run_parallel(*fns):
    results, errors = [None] * len(fns), []

    def call(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a PSI party hung"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def Wire():  # noqa: N802 - a class, handed out by a fixture
    """In-memory queues between two parties, standing in for medsplit's Transport."""
    return _Wire


@pytest.fixture(name="run_parallel")
def _run_parallel_fixture():
    """Run each party in its own thread with a hard timeout; re-raise the first failure."""
    return run_parallel
