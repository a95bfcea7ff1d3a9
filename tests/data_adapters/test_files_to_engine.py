"""From files to a trained split model: synthetic cohort on disk -> site pipelines -> PSI -> engine."""

from __future__ import annotations

import json

import pydicom
import pytest

from medsplit import Kind, Meter, MockTransport, SplitTrainer
from medsplit.align.channel import align_in_process
from medsplit.config.experiment import load_experiment
from sites.cli import main
from sites.cohort import demo_experiment, open_sites


def _train_from_files(preset: str, tmp_path, **topology):
    meter = Meter()
    exp = load_experiment(demo_experiment(preset, sites=topology.pop("sites", 2), patients=topology.pop("patients", 60),
                                          seed=1, root=tmp_path, topology=topology))
    topo = exp.build_topology()
    cohort = open_sites({s.party: s.config for s in exp.sites}, topo, meter=meter)
    trainer = SplitTrainer(topo, cohort.engine_data(topo), batch_size=16, meter=meter)
    trainer.fit(1)
    return cohort, trainer, exp


def test_vertical_cohort_trains_from_files_with_psi_and_fingerprints(tmp_path):
    cohort, trainer, exp = _train_from_files("vertical", tmp_path, ushaped=True)
    # The files are real DICOM, readable by pydicom, with the tags a scanner writes.
    dcm = next((exp.path.parent / "site_1").rglob("*.dcm"))
    ds = pydicom.dcmread(dcm)
    assert ds.Modality == "CT" and ds.PixelSpacing and ds.RescaleSlope is not None
    assert cohort.aligned is not None and 0 < cohort.aligned < 60  # patients overlap only partly
    imaging, ehr = trainer.data["imaging"], trainer.data["ehr"]
    for split in ("train", "val"):
        a, b = getattr(imaging, split), getattr(ehr, split)
        assert a.row_ids(range(len(a))) == b.row_ids(range(len(b)))  # row k is the same patient at both sites
    val = imaging.val
    kinds = {r["kind"] for r in trainer.meter.audit()}
    assert kinds == {"psi", "fingerprint", "activation", "gradient"}  # no labels, no raw data
    metrics = trainer.history[-1].metrics["diagnosis"]
    assert metrics["n"] == len(val) and 0.0 <= metrics["val_auc"] <= 1.0


def test_horizontal_cohort_trains_from_files(tmp_path):
    cohort, trainer, _ = _train_from_files("horizontal", tmp_path, sites=3, patients=40)
    assert set(cohort.sites) == {"hospital_1", "hospital_2", "hospital_3"}
    assert trainer.history[-1].metrics["diagnosis"]["n"] == sum(len(d.val) for d in trainer.data.values())
    batch = trainer.data["hospital_1"].train.batch([0, 1])
    assert set(batch) == {"image", "diagnosis"}  # only the keys the topology declares are read


def test_psi_messages_carry_no_raw_ids(tmp_path):
    ids = {"ehr": [f"MRN{i:06d}" for i in range(0, 50)], "imaging": [f"MRN{i:06d}" for i in range(20, 80)]}
    transport = MockTransport(lambda m: m)
    meter = Meter()
    orders = align_in_process(ids, "ehr", transport, meter)
    expected = {f"MRN{i:06d}" for i in range(20, 50)}
    assert set(orders["ehr"]) == expected and orders["ehr"] == orders["imaging"]
    assert transport.seen and all(m.kind is Kind.PSI for m in transport.seen)
    payload = b"".join(bytes(m.tensor.numpy().tobytes()) for m in transport.seen)
    assert not any(rid.encode() in payload for rid in ids["ehr"] + ids["imaging"])
    assert sum(r["bytes"] for r in meter.audit()) == len(payload)


def test_demo_trains_from_files_by_default(tmp_path, capsys):
    path = tmp_path / "run.json"
    assert main(["demo", "--preset", "vertical", "--epochs", "1", "--patients", "60", "--workdir",
                 str(tmp_path / "data"), "--json", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "aligned by private set intersection" in out and "60 loaded" in out  # from the server's log
    assert "started 3 processes" in out  # the demo's default: the server and each site as processes
    summary = json.loads(path.read_text())
    assert summary["data"] == "files"
    assert {"psi", "fingerprint"} <= {r["kind"] for r in summary["audit"]}
    assert (tmp_path / "data" / "vertical-2x60-seed0" / "experiment.yaml").exists()
    assert (tmp_path / "data" / "vertical-2x60-seed0" / "demo-vertical.yaml").exists()


def test_medsplit_cli_mounts_data_commands(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "c"), "--sites", "2", "--patients", "6", "--seed", "2",
                 "--layout", "horizontal"]) == 0
    report = tmp_path / "report.json"
    assert main(["data", "check", "--config", str(tmp_path / "c" / "site_1" / "site.yaml"),
                 "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert {"found", "loaded", "rejected"} <= set(data) and data["rejected"] == []
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "data check" in capsys.readouterr().out
