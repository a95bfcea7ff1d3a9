"""Shared fixtures: deterministic torch, small synthetic cohorts, the one config error format."""

from __future__ import annotations

import re

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
