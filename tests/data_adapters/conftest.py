"""Shared fixtures for the data adapter tests: synthetic cohorts written once per session."""

from __future__ import annotations

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
