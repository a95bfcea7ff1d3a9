"""Nodes as real processes on 127.0.0.1, attacked: an impostor, forged writes to the open store, a sniffer on the
loopback interface, a site with another experiment. The run goes on for the parties that are right."""

from __future__ import annotations

import datetime
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torch.distributed import TCPStore

from medsplit.config.experiment import load_experiment
from medsplit.runstore import RunStore
from sites.provision import provision_experiment
from sites.run import run_in_process


def _load_nodes():
    # The node tests' cluster helpers, by path (test modules are not importable packages here).
    spec = importlib.util.spec_from_file_location("medsplit_test_nodes", Path(__file__).with_name("test_nodes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_nodes = _load_nodes()
_experiment, _same_run = _nodes._experiment, _nodes._same_run
cluster_factory, one_thread = _nodes.cluster_factory, _nodes.one_thread  # fixtures

pytestmark = pytest.mark.slow

_IMPOSTOR = """\
import sys
from medsplit.config.experiment import load_experiment
from medsplit.plan import compile_topology
from medsplit.runtime.control import ControlPlane
from medsplit.transport import NameTable
from medsplit.transport.gloo import GlooTransport
from medsplit.transport.secure import Identity, PeerTrust, Trust
from sites.provision import pinned_keys, read_parties

exp = load_experiment(sys.argv[1])
plan = compile_topology(exp.build_topology())
# Everything public: the study's list (the server's public key), the run's name, the experiment's digest. Its
# own key is not the one the study holds for 'hospital'.
keys, _ = pinned_keys(read_parties(sys.argv[3]))
trust = Trust(Identity.generate(), {"server": PeerTrust(public_key=keys["server"])})
t = GlooTransport("hospital", ["server"], NameTable.from_plan(plan), "127.0.0.1", int(sys.argv[2]), False, exp.name,
                  timeout=10, trust=trust, digest=exp.digest(), hub="server")
control = ControlPlane(t, exp.name, "hospital")
control.wait_invited(control.knock(), 60)
try:
    t.reconnect("server")
    print("IMPOSTOR CONNECTED", flush=True)
except Exception as exc:
    print("IMPOSTOR REFUSED:", exc, flush=True)
t.close()
"""


def _provisioned(c, exp_path: Path, tmp_path: Path) -> None:
    provision_experiment(exp_path, tmp_path / "study")
    c.identities = tmp_path / "study"
    # Keys only: no shared secret anywhere, so the identities alone authenticate every pair.
    c.env = {k: v for k, v in c.env.items() if not k.startswith("MEDSPLIT_SECRET_")}


def test_an_impostor_and_forged_store_writes_change_nothing_and_a_sniffer_reads_nothing(
        tmp_path, one_thread, cluster_factory, loopback_capture):  # noqa: F811
    exp_path = _experiment(tmp_path, "vanilla", sites=1, epochs=2, patients=48, checkpoint_every=2)
    reference = run_in_process(load_experiment(exp_path), run_dir=tmp_path / "ref", progress=False)
    c = cluster_factory(exp_path, tmp_path / "run")
    _provisioned(c, exp_path, tmp_path)
    c.start("server")
    loopback_capture.track(c.procs["server"].pid)
    # The impostor knocks first, as 'hospital', and is invited: its handshake is refused, and logged.
    driver = tmp_path / "impostor.py"
    driver.write_text(_IMPOSTOR)
    impostor = subprocess.run([sys.executable, str(driver), str(exp_path), str(c.port),
                               str(tmp_path / "study" / "parties.json")], capture_output=True, text=True, timeout=90,
                              env=c.env)
    assert "IMPOSTOR REFUSED" in impostor.stdout and "refused party 'hospital'" in impostor.stdout, (
        impostor.stdout + impostor.stderr[-2000:])
    c.start("hospital")
    loopback_capture.track(c.procs["hospital"].pid)
    log = tmp_path / "run" / "logs" / "server.log"
    c.wait_for(lambda: "epoch 1/2" in log.read_text(), "the first epoch to end")
    # One write each, as anyone who reaches the store port can: what ended, faked or stalled a run before.
    store = TCPStore("127.0.0.1", c.port, None, False, datetime.timedelta(seconds=10))
    run = c.exp.name
    forged = {f"ctl/{run}/done": {"summary": "completed", "by": "FORGED-BY-TEST"},
              f"ctl/{run}/session": {"session": 99, "digest": "x", "mode": "train"},
              f"ctl/{run}/1/epoch/1/hospital": {"metrics": {"diagnosis": {"val_auc": 0.99999, "n": 10 ** 6}}},
              f"ctl/{run}/1/rows": {"hospital": [1, 1]},
              f"ctl/{run}/knock/hospital": "forged", f"ctl/{run}/invite/hospital": "forged",
              f"medsplit/{run}/store_id": "forged"}
    for key, value in forged.items():
        store.set(key, json.dumps(value))
    summary = c.finish()
    _same_run(summary, reference)  # every number as if nobody had written anything
    loopback_capture.stop()
    events = RunStore(tmp_path / "run", readonly=True).rows("events")
    refused = [r for r in events if r["status"] == "refused"]
    assert [r["party"] for r in refused] == ["hospital"] and "did not sign with the pinned key" in refused[0]["detail"]
    site_log = (tmp_path / "run" / "logs" / "hospital.log").read_text()
    assert "the run is complete" not in site_log and "finished" in site_log
    # What crossed loopback between the run's processes (but the test's own forged writes, on the store's port):
    # no metric, report, or key in clear.
    ours = set(loopback_capture.find(b"FORGED-BY-TEST"))
    assert ours, "the capture saw the forged writes"
    assert len(loopback_capture.ports) > 3 and loopback_capture.total > 300_000, "the capture saw the run's traffic"
    for needle in (b"val_auc", b"train_loss", b"epoch_ends", b"checkpoints", b"compute_seconds",
                   (tmp_path / "study" / "hospital" / "hospital.key").read_bytes()[28:60]):
        assert not set(loopback_capture.find(needle)) - ours, f"{needle!r} crossed loopback in clear"
    assert loopback_capture.find(b"ctl/" + run.encode() + b"/knock/hospital"), "the capture saw the run's store"


def test_a_site_with_another_experiment_is_refused_and_logged_and_the_run_goes_on(tmp_path, cluster_factory):  # noqa: F811
    exp_path = _experiment(tmp_path, "horizontal", sites=2, epochs=2, patients=32, timeout=8, rejoin_timeout=60)
    other = exp_path.with_name("other.yaml")  # the same study, a changed learning rate: another experiment
    data = yaml.safe_load(exp_path.read_text())
    data["training"]["lr"] = 0.5
    other.write_text(yaml.safe_dump(data))
    c = cluster_factory(exp_path, tmp_path / "run")
    _provisioned(c, exp_path, tmp_path)
    c.start("server")
    c.start("hospital_1")
    c.start("hospital_2", experiment=other)
    refused_site = c.procs.pop("hospital_2")
    assert refused_site.wait(timeout=90) == 2  # refused by the authenticated server: it stops, with the reason
    summary = c.finish()
    assert summary["status"] == "completed" and [h["epoch"] for h in summary["history"]] == [1, 2]
    site_log = (tmp_path / "run" / "logs" / "hospital_2.log").read_text()
    server_log = (tmp_path / "run" / "logs" / "server.log").read_text()
    assert "'server' refused party 'hospital_2'" in site_log and "runs another experiment" in site_log
    assert "refused party 'hospital_2'" in server_log and "runs another experiment" in server_log
    events = [(r["party"], r["status"], r["detail"]) for r in RunStore(tmp_path / "run", readonly=True).rows("events")]
    assert any(p == "hospital_2" and s == "refused" and "another experiment" in d for p, s, d in events)
    assert ("hospital_1", "finished", "") in events
    audit = tmp_path / "run" / "sites" / "hospital_2" / "audit.jsonl"
    assert not audit.exists() or audit.read_text() == "", "nothing left the refused site"
