"""Nodes as real processes on 127.0.0.1: the same numbers as in-process, recovery after kill -9, refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from medsplit.config.experiment import load_experiment
from medsplit.runstore import RunStore
from sites.cohort import demo_experiment
from sites.launch import free_port, run_processes
from sites.nodes import secret_env_name
from sites.run import run_in_process

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "sites.cli"]


def _experiment(tmp_path: Path, preset: str, *, epochs: int = 2, sites: int = 2, patients: int = 48,
                checkpoint_every: int = 2, **training) -> Path:
    return demo_experiment(preset, sites=sites, patients=patients, seed=4, root=tmp_path / "data",
                           training={"epochs": epochs, "batch_size": 8, "checkpoint_every": checkpoint_every,
                                     "timeout": 30, "rejoin_timeout": 90, **training})



class _Cluster:
    """Server and site processes started by hand, so that a test can kill and restart them by PID."""

    def __init__(self, exp_path: Path, run_dir: Path) -> None:
        self.exp = load_experiment(exp_path)
        self.exp_path, self.run_dir, self.port = exp_path, run_dir, free_port()
        self.env = {**os.environ, **{secret_env_name(s.party): f"secret-{s.party}" for s in self.exp.sites}}
        self.procs: dict[str, subprocess.Popen] = {}
        self.identities: Path | None = None  # a study from `medsplit provision`, when set
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, party: str, env: dict | None = None, experiment: Path | None = None) -> None:
        exp_path = experiment or self.exp_path
        if party == "server":
            cmd = CLI + ["server", "--experiment", str(exp_path), "--port", str(self.port), "--run-dir",
                         str(self.run_dir)]
        else:
            site = next(s for s in self.exp.sites if s.party == party)
            cmd = CLI + ["site", "--config", str(site.config), "--experiment", str(exp_path), "--server",
                         f"127.0.0.1:{self.port}", "--party", party, "--run-dir", str(self.run_dir / "sites" / party)]
        if self.identities is not None:
            cmd += ["--identity", str(self.identities / party)]
        log = open(self.run_dir / "logs" / f"{party}.log", "a")  # noqa: SIM115 - handed to the child
        self.procs[party] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or self.env,
                                             start_new_session=True)
        log.close()

    def kill(self, party: str) -> None:
        proc = self.procs.pop(party)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def wait_for(self, predicate, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = {p: proc.returncode for p, proc in self.procs.items() if proc.poll() not in (None, 0)}
            assert not dead, f"{dead} died while waiting for {what}:\n{self.logs()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.logs()}"
            time.sleep(0.1)

    def finish(self, timeout: float = 180) -> dict:
        for party, proc in self.procs.items():
            try:
                assert proc.wait(timeout=timeout) == 0, f"{party} exited with {proc.returncode}:\n{self.logs()}"
            except subprocess.TimeoutExpired:
                pytest.fail(f"{party} did not finish:\n{self.logs()}")
        return json.loads((self.run_dir / "summary.json").read_text())

    def logs(self) -> str:
        return "\n".join(f"--- {log.stem}\n{log.read_text()[-3000:]}"
                         for log in sorted((self.run_dir / "logs").glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def checkpoints(self, party: str) -> list[int]:
        folder = (self.run_dir if party == "server" else self.run_dir / "sites" / party) / "checkpoints" / party
        return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.pt")) if folder.exists() else []


@pytest.fixture
def cluster_factory():
    clusters = []

    def make(exp_path, run_dir):
        clusters.append(_Cluster(exp_path, run_dir))
        return clusters[-1]

    yield make
    for c in clusters:
        c.stop()


def test_gloo_processes_give_the_in_process_numbers(tmp_path):
    exp_path = _experiment(tmp_path, "horizontal", epochs=2)
    local = run_in_process(load_experiment(exp_path), run_dir=tmp_path / "local", progress=False)
    gloo = run_processes(exp_path, transport="gloo", run_dir=tmp_path / "gloo")
    for task, m in local["metrics"].items():
        for key in ("val_auc", "val_loss"):
            assert gloo["metrics"][task][key] == pytest.approx(m[key], abs=1e-6), (task, key)
    assert gloo["flops_per_step"] == local["flops_per_step"]
    assert {(r["src"], r["dst"], r["kind"]) for r in gloo["audit"]} == {
        (r["src"], r["dst"], r["kind"]) for r in local["audit"]}
    store = RunStore(tmp_path / "gloo", readonly=True)
    assert store.info()["status"] == "completed"
    assert {r["status"] for r in store.rows("events")} >= {"connected", "training", "finished"}
    # Each site's own audit log lists what left it, and nothing but declared kinds.
    site_dir = tmp_path / "gloo" / "sites" / "hospital_1"
    out = subprocess.run(CLI + ["audit", str(site_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "-> server" in out.stdout and "activation" in out.stdout and "labels left this site: YES" in out.stdout


def test_vertical_over_gloo_aligns_by_psi_between_site_processes(tmp_path):
    exp_path = _experiment(tmp_path, "vertical", epochs=1, patients=40)
    summary = run_processes(exp_path, transport="gloo", run_dir=tmp_path / "run")
    kinds = {(r["src"], r["kind"]) for r in summary["audit"]}
    assert ("ehr", "psi") in kinds and ("imaging", "psi") in kinds and ("imaging", "fingerprint") in kinds
    assert summary["metrics"]["diagnosis"]["n"] > 0
    order = json.loads((tmp_path / "run" / "sites" / "imaging" / "aligned_order.json").read_text())
    assert 0 < len(order) < 40  # the sites share only part of their patients


def _same_run(summary: dict, reference: dict) -> None:
    """Every epoch's metrics and losses as in the uninterrupted run: nothing done before the kill was lost, and
    nothing was drawn differently after it (augmentation is seeded per step)."""
    assert [h["epoch"] for h in summary["history"]] == [h["epoch"] for h in reference["history"]]
    for got, want in zip(summary["history"], reference["history"], strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-6)
        for task, m in want["metrics"].items():
            for name in ("val_loss", "val_auc"):
                assert got["metrics"][task][name] == pytest.approx(m[name], abs=1e-6), (got["epoch"], name)


@pytest.fixture
def one_thread(monkeypatch):
    # One thread per process in the cluster and in the reference: runs are compared to 1e-6.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def test_a_killed_site_rejoins_and_the_run_finishes_as_if_uninterrupted(tmp_path, one_thread, cluster_factory):
    exp_path = _experiment(tmp_path, "vanilla", sites=1, epochs=3, patients=64, checkpoint_every=2)
    reference = run_in_process(load_experiment(exp_path), run_dir=tmp_path / "ref", progress=False)
    c = cluster_factory(exp_path, tmp_path / "run")
    c.start("server")
    c.start("hospital")
    # Mid-run: after a checkpoint inside the second epoch (each epoch is 7 steps of 8 patients).
    c.wait_for(lambda: any(s > 9 for s in c.checkpoints("hospital")), "a checkpoint in epoch 2")
    c.kill("hospital")
    c.start("hospital")
    summary = c.finish()
    assert summary["session"] >= 2
    _same_run(summary, reference)
    events = [(r["party"], r["status"]) for r in RunStore(tmp_path / "run", readonly=True).rows("events")]
    assert ("hospital", "down") in events and ("hospital", "resumed") in events
    assert "resumed at epoch 2" in (tmp_path / "run" / "logs" / "hospital.log").read_text()


def test_a_killed_server_restarts_from_its_checkpoint(tmp_path, one_thread, cluster_factory):
    exp_path = _experiment(tmp_path, "vanilla", sites=1, epochs=3, patients=64, checkpoint_every=2)
    reference = run_in_process(load_experiment(exp_path), run_dir=tmp_path / "ref", progress=False)
    c = cluster_factory(exp_path, tmp_path / "run")
    c.start("server")
    c.start("hospital")
    c.wait_for(lambda: any(s > 9 for s in c.checkpoints("server")), "a server checkpoint in epoch 2")
    c.kill("server")
    c.start("server")
    summary = c.finish()
    _same_run(summary, reference)
    assert "resumed at epoch 2" in (tmp_path / "run" / "logs" / "server.log").read_text()


def test_a_site_with_the_wrong_secret_is_refused_before_any_tensor(tmp_path, cluster_factory):
    # Secrets only (no provisioned keys): neither end can tell a wrong secret from an impostor, so each attempt
    # is refused and retried until the rejoin wait runs out at both ends.
    exp_path = _experiment(tmp_path, "vanilla", sites=1, epochs=1, timeout=5, rejoin_timeout=10)
    c = cluster_factory(exp_path, tmp_path / "run")
    c.start("server")
    c.start("hospital", env={**c.env, secret_env_name("hospital"): "not-the-secret"})
    # bounds, not timings: each ends once its 10 s rejoin wait runs out (start-up is slow on a busy machine)
    assert c.procs["hospital"].wait(timeout=180) != 0
    assert c.procs["server"].wait(timeout=180) != 0
    site_log = (tmp_path / "run" / "logs" / "hospital.log").read_text()
    server_log = (tmp_path / "run" / "logs" / "server.log").read_text()
    assert "refused the connection: 'server' could not prove who it is" in site_log
    assert "refused party 'hospital'" in server_log and "did not join within 10 s" in server_log
    audit = tmp_path / "run" / "sites" / "hospital" / "audit.jsonl"
    assert not audit.exists() or audit.read_text() == ""  # nothing left the site
    events = RunStore(tmp_path / "run", readonly=True).rows("events")
    assert ("hospital", "refused") in [(r["party"], r["status"]) for r in events]


def test_rpc_transport_runs_a_multihop_chain(tmp_path):
    exp_path = _experiment(tmp_path, "multihop", sites=1, epochs=1)
    summary = run_processes(exp_path, transport="rpc", run_dir=tmp_path / "run")
    assert {r["src"] for r in summary["audit"]} == {"hospital", "relay_1", "server"}
    assert summary["metrics"]["diagnosis"]["n"] > 0


def test_site_config_node_section_is_validated(tmp_path):
    exp_path = _experiment(tmp_path, "vanilla", sites=1, epochs=1)
    site_yaml = load_experiment(exp_path).sites[0].config
    data = yaml.safe_load(site_yaml.read_text())
    data["node"] = {"servr": "127.0.0.1:1"}
    site_yaml.write_text(yaml.safe_dump(data))
    out = subprocess.run(CLI + ["site", "--config", str(site_yaml)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "node.servr" in out.stderr


def test_horizontal_goes_on_without_a_site_that_is_down_and_takes_it_back(tmp_path, cluster_factory):
    # Enough epochs for the restarted site (seconds to import torch and open its data, more on a loaded machine)
    # to come back before the end: an epoch here takes about a second.
    exp_path = _experiment(tmp_path, "horizontal", sites=3, epochs=20, patients=48, checkpoint_every=2,
                           timeout=8, rejoin_timeout=60)
    c = cluster_factory(exp_path, tmp_path / "run")
    c.start("server")
    for site in ("hospital_1", "hospital_2", "hospital_3"):
        c.start(site)
    log = tmp_path / "run" / "logs" / "server.log"
    c.wait_for(lambda: "epoch 1/20  diagnosis" in log.read_text(), "the first epoch to end")
    c.kill("hospital_2")
    c.wait_for(lambda: "site 'hospital_2' is down: continuing with" in log.read_text(), "the server to go on")
    c.start("hospital_2")  # it comes back; the server takes it in at the next epoch's end
    summary = c.finish()
    assert [h["epoch"] for h in summary["history"]] == list(range(1, 21))
    events = [(r["party"], r["status"]) for r in RunStore(tmp_path / "run", readonly=True).rows("events")]
    down = events.index(("hospital_2", "down"))
    assert ("hospital_2", "resumed") in events[down:]
    # Nothing finished was redone: every epoch ended once (a restart from scratch would repeat epoch 1).
    text = log.read_text()
    assert [text.count(f"epoch {e}/20  diagnosis") for e in range(1, 21)] == [1] * 20, text[-3000:]
    assert summary["metrics"]["diagnosis"]["n"] > 0


def test_a_site_that_sends_a_bad_tensor_is_refused_and_the_run_retries_the_step(tmp_path, cluster_factory):
    """The site's first activation at step 5 holds NaN: the server rejects it, logs it, and the session
    restarts from the last checkpoint; the retried step is clean and the run completes."""
    exp_path = _experiment(tmp_path, "vanilla", sites=1, epochs=2, patients=48, checkpoint_every=2)
    c = cluster_factory(exp_path, tmp_path / "run")
    c.start("server")
    driver = tmp_path / "corrupt_once.py"
    driver.write_text(
        "import sys, torch\n"
        "from medsplit.engine import party\n"
        "from sites.cli import main\n"
        "orig, done = party.PartyRunner._send, []\n"
        "def send(self, op, step, phase):\n"
        "    st = self._state.get(step)\n"
        "    if step == 5 and not done and op.kind.value == 'activation':\n"
        "        done.append(1)\n"
        "        edge = self.plan.edges[op.target]\n"
        "        st.outputs[edge.src] = st.outputs[edge.src] * float('nan')\n"
        "    return orig(self, op, step, phase)\n"
        "party.PartyRunner._send = send\n"
        "sys.exit(main(sys.argv[1:]))\n")
    site = c.exp.sites[0]
    log = open(c.run_dir / "logs" / "hospital.log", "w")
    c.procs["hospital"] = subprocess.Popen(
        [sys.executable, str(driver), "site", "--config", str(site.config), "--experiment", str(exp_path),
         "--server", f"127.0.0.1:{c.port}", "--party", "hospital", "--run-dir", str(c.run_dir / "sites" / "hospital")],
        stdout=log, stderr=subprocess.STDOUT, env=c.env, start_new_session=True)
    log.close()
    summary = c.finish()
    server_log = (c.run_dir / "logs" / "server.log").read_text()
    assert "holds NaN or Inf" in server_log and "session 1 stopped" in server_log
    assert summary["session"] == 2 and [h["epoch"] for h in summary["history"]] == [1, 2]
