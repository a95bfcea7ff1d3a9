"""Start runs as child processes (PID recorded in the run dir, output to a log there), check on them, stop them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from medsplit.config.experiment import dump_experiment, load_experiment
from medsplit.topology import preset_spec
from medsplit.transport import transport_names

__all__ = ["ROOT", "LAUNCH_FILE", "LOG_FILE", "Launch", "medsplit_argv", "run_transports", "run_argv",
           "synth_layout", "prepare_synthetic", "launch", "launch_state", "stop"]

ROOT = Path(__file__).resolve().parents[1]  # the checkout: `python -m sites.cli` works from here uninstalled
LAUNCH_FILE = "launch.json"
LOG_FILE = "launch.log"
_PROCS: dict[int, subprocess.Popen] = {}  # children of this dashboard process, polled so they never linger


@dataclass(frozen=True)
class Launch:
    """What the dashboard started: its PID, the command, and where its output goes."""

    pid: int
    argv: tuple[str, ...]
    run_dir: Path
    log: Path
    started: float


def medsplit_argv() -> list[str]:
    return [sys.executable, "-m", "sites.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_transports() -> tuple[str, ...]:
    """The transports `medsplit run --transport` accepts (the one transport registry)."""
    return tuple(transport_names())


def run_argv(experiment: str | Path, transport: str, run_dir: str | Path) -> list[str]:
    """`medsplit run EXP.yaml --transport local|gloo --run-dir DIR`."""
    return [*medsplit_argv(), "run", str(experiment), "--transport", transport, "--run-dir", str(run_dir)]


def synth_layout(preset: str, sites: int) -> tuple[str, int]:
    """The `medsplit synth` layout and site count whose cohort fits a preset (from the preset registry)."""
    spec = preset_spec(preset)
    return spec.layout, len(spec.site_parties(spec.cohort_sites(max(sites, spec.min_sites))))


def prepare_synthetic(experiment: Mapping[str, Any], run_dir: str | Path, *, patients: int, seed: int,
                      timeout: float = 300.0) -> Path:
    """Write a synthetic cohort under RUN_DIR/data and RUN_DIR/experiment.yaml: its sites, the builder's settings.

    Returns the experiment path; every site's data check report goes to RUN_DIR/reports/<site>.json.
    """
    run_dir = Path(run_dir)
    data = run_dir / "data"
    topology = dict(experiment.get("topology") or {})
    layout, n = synth_layout(str(topology.get("preset", "vanilla")), len(experiment.get("sites") or []))
    _check_all([[*medsplit_argv(), "synth", "--out", str(data), "--sites", str(n), "--patients", str(patients),
                "--seed", str(seed), "--layout", layout]], timeout)
    cohort = load_experiment(data / "experiment.yaml")
    merged = dict(cohort.raw)
    merged.update({"experiment": experiment.get("experiment", cohort.name), "seed": seed, "topology": topology,
                   "training": dict(experiment.get("training") or {})})
    designed = list(experiment.get("sites") or [])
    merged["sites"] = [dict(s, config=f"data/{s['config']}", **({"party": d["party"]} if d.get("party") else {}))
                       for s, d in zip(merged["sites"], designed + [{}] * len(merged["sites"]))]
    merged["server"] = {**dict(merged.get("server") or {}), "run_dir": "."}
    path = run_dir / "experiment.yaml"
    dump_experiment(merged, path)
    reports = run_dir / "reports"
    reports.mkdir(exist_ok=True)
    checks = [[*medsplit_argv(), "data", "check", "--config", str(site.config), "--json",
               str(reports / f"{site.name}.json")] for site in load_experiment(path).sites if site.config is not None]
    _check_all(checks, timeout, ok=(0, 1))  # 1: some key loaded nothing; the run itself will say why
    return path


def _check_all(commands: Sequence[Sequence[str]], timeout: float, ok: tuple[int, ...] = (0,)) -> None:
    """Run commands side by side (each site's check is independent); raise on the first failure."""
    procs = [subprocess.Popen(list(c), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              text=True, env=_env(), cwd=ROOT) for c in commands]
    try:
        for argv, proc in zip(commands, procs):
            out, _ = proc.communicate(timeout=timeout)
            if proc.returncode not in ok:
                tail = " / ".join(out.strip().splitlines()[-3:])
                raise RuntimeError(f"`medsplit {' '.join(argv[3:5])}` failed (exit {proc.returncode}): {tail}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def launch(argv: Sequence[str], run_dir: str | Path) -> Launch:
    """Start ``argv`` in its own session (so that stopping it stops its children), output to RUN_DIR/launch.log."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / LOG_FILE
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ROOT, env=_env(), start_new_session=True)
    _PROCS[proc.pid] = proc
    record = Launch(proc.pid, tuple(argv), run_dir, log, time.time())
    (run_dir / LAUNCH_FILE).write_text(json.dumps({"pid": record.pid, "argv": list(record.argv),
                                                   "log": LOG_FILE, "started": record.started}, indent=2))
    return record


def launch_state(run_dir: str | Path) -> dict[str, Any] | None:
    """{pid, command, alive, returncode} for a run the dashboard started; None for runs started elsewhere."""
    path = Path(run_dir) / LAUNCH_FILE
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(rec["pid"])
    proc = _PROCS.get(pid)
    returncode = proc.poll() if proc is not None else None
    alive = returncode is None and (proc is not None or _ours(pid, rec.get("argv", [])))
    command = " ".join(rec.get("argv", [])[2:4]).replace("sites.cli", "medsplit")
    return {"pid": pid, "command": command, "alive": alive, "returncode": returncode,
            "log": str(path.parent / LOG_FILE)}


def _ours(pid: int, argv: Sequence[str]) -> bool:
    """Whether ``pid`` is still the process we started (its command line matches), not a reused PID."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [c.decode(errors="replace") for c in cmdline if c] == list(argv)


def stop(run_dir: str | Path, grace: float = 10.0) -> bool:
    """Terminate a run this dashboard started (its process group), then kill it after ``grace`` seconds."""
    state = launch_state(run_dir)
    if not state or not state["alive"]:
        return False
    pid = state["pid"]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not (launch_state(run_dir) or {}).get("alive"):
                return True
            time.sleep(0.1)
    return not (launch_state(run_dir) or {}).get("alive")
