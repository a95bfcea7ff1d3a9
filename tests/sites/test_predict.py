"""`medsplit predict`: the trained model forward on site data, predictions written at the labels' site."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medsplit.config.experiment import load_experiment
from medsplit.engine.metrics import roc_auc
from sites.cli import main
from sites.cohort import demo_experiment


def _labels(cohort_dir, site):
    rows = list(csv.DictReader(open(cohort_dir / site / "ehr.csv")))
    return {r["patient_id"]: float(r["diagnosis"]) for r in rows}


def test_predict_after_an_in_process_run_writes_at_the_labels_site(tmp_path, capsys):
    exp_path = demo_experiment("vertical", sites=2, patients=120, seed=2, root=tmp_path / "data",
                               topology={"ushaped": True}, training={"epochs": 4, "batch_size": 16, "lr": 0.003})
    assert main(["run", str(exp_path), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["predict", str(exp_path), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "pred")]) == 0
    exp = load_experiment(exp_path)
    owner = next(s.name for s in exp.sites if s.labels)
    files = list((tmp_path / "pred").rglob("*.csv"))
    assert [f.relative_to(tmp_path / "pred").parts[0] for f in files] == [owner]  # nowhere else
    rows = list(csv.DictReader(open(files[0])))
    truth = _labels(exp_path.parent, owner)
    assert 60 < len(rows) < 120  # the patients both sites hold (PSI), not one site's whole list
    y = np.array([truth[r["row_id"]] for r in rows])
    p = np.array([float(r["diagnosis"]) for r in rows])
    assert ((p >= 0) & (p <= 1)).all() and roc_auc(y, p) > 0.7


def test_predict_without_a_trained_run_is_a_clear_error(tmp_path, capsys):
    exp_path = demo_experiment("vanilla", sites=1, patients=20, seed=2, root=tmp_path / "data")
    assert main(["predict", str(exp_path), "--run-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "no checkpoint of party" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_from_a_multi_process_run(tmp_path):
    from sites.launch import run_processes

    exp_path = demo_experiment("vanilla", sites=1, patients=48, seed=2, root=tmp_path / "data",
                               training={"epochs": 1, "batch_size": 16, "timeout": 30})
    run_processes(exp_path, transport="gloo", run_dir=tmp_path / "run")
    assert main(["predict", str(exp_path), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "p")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "p" / "site_1" / "predictions-diagnosis.csv")))) == 48


def _read(path):
    return {r["row_id"]: r for r in csv.DictReader(open(path))}


@pytest.mark.slow
@pytest.mark.parametrize("preset,topology", [("vanilla", {}), ("vertical", {"ushaped": True}), ("horizontal", {})])
def test_predict_over_gloo_equals_in_process(tmp_path, preset, topology):
    """Each party loads its own checkpoint where it lives; only cut tensors and each site's own predictions cross,
    and the predictions are the ones the same model gives in one process."""
    from sites.launch import run_processes

    exp_path = demo_experiment(preset, sites=2, patients=40, seed=3, root=tmp_path / "data", topology=topology,
                               training={"epochs": 1, "batch_size": 8, "timeout": 60})
    run_processes(exp_path, transport="gloo", run_dir=tmp_path / "run")
    assert main(["predict", str(exp_path), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "local")]) == 0
    assert main(["predict", str(exp_path), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "nodes"),
                 "--transport", "gloo"]) == 0
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.csv"))
    nodes = sorted(p.relative_to(tmp_path / "nodes") for p in (tmp_path / "nodes").rglob("*.csv"))
    exp = load_experiment(exp_path)
    owners = {s.name for s in exp.sites if s.labels}
    assert local == nodes and {p.parts[0] for p in local} == owners  # written only where the labels live
    for rel in local:
        a, b = _read(tmp_path / "local" / rel), _read(tmp_path / "nodes" / rel)
        assert a.keys() == b.keys() and len(a) > 0
        for rid in a:
            assert float(b[rid]["diagnosis"]) == pytest.approx(float(a[rid]["diagnosis"]), abs=1e-6)
    # What left each site while predicting: cut activations (and row fingerprints), never labels.
    for site in exp.sites:
        rows = [json.loads(line) for line in (tmp_path / "run" / "sites" / site.party / "audit.jsonl").open()]
        sent = {r["kind"] for r in rows if r["phase"] == "predict"}
        assert "activation" in sent and sent <= {"activation", "fingerprint"}, sent
