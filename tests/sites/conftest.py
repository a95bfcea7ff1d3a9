"""The site application's tests: runs compared across modes use one thread per process."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # One thread per process in every mode (children inherit OMP_NUM_THREADS): a multi-threaded convolution
    # backward may sum in another order from run to run, and runs here are compared to 1e-6.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
