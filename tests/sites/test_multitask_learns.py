"""A multitask study on synthetic CT learns both of its tasks, because synthetic CT is read in the soft-tissue window.

The synthetic lesion is +60..180 HU over 40 HU soft tissue: about 5% of the default CT window [-1000, 400], where
the mortality task stayed near chance after 10 epochs; `medsplit synth` writes the soft-tissue window into its CT
sites (benchmarks/ct_window.py measures both windows).
"""

from __future__ import annotations

import pytest
import yaml

from data_adapters.synth_dicom import SOFT_TISSUE_WINDOW
from medsplit.config import load_experiment
from sites.cohort import demo_experiment
from sites.run import run_in_process

pytestmark = pytest.mark.slow


def test_multitask_learns_diagnosis_and_mortality_within_a_few_epochs(tmp_path):
    path = demo_experiment("multitask", sites=1, patients=160, seed=0, root=tmp_path,
                           training={"epochs": 6, "batch_size": 16, "lr": 0.003})
    exp = load_experiment(path)
    site = yaml.safe_load(exp.sites[0].config.read_text())
    assert site["modalities"]["image"]["pipeline"]["window"] == list(SOFT_TISSUE_WINDOW)
    metrics = run_in_process(exp, progress=False)["metrics"]
    assert metrics["diagnosis"]["val_auc"] > 0.7 and metrics["mortality"]["val_auc"] > 0.7, metrics
