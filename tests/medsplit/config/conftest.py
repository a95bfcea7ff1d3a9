"""Fixtures for the configuration tests."""

from __future__ import annotations

import re

import pytest
import yaml

from medsplit.config import load_experiment
from medsplit.errors import ConfigError


@pytest.fixture
def error(tmp_path, one_format):
    """Load ``data`` from a file; the error must be in the one format and name that file."""

    def check(data) -> re.Match:
        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError) as exc:
            load_experiment(path)
        match = one_format(exc.value)
        assert match["file"] == str(path.resolve())
        return match

    return check
