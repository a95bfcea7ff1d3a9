"""Start runs from the page without waiting for them: a job process per run (`python -m dashboard.job RUN_DIR`)
makes its data and runs `medsplit run`; its PID is recorded in the run dir, its output goes to a log there. Stop
signals it; Resume starts it again on the run's checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsplit.errors import ConfigError
from medsplit.runstore import FINAL_STATUSES, RUNSTORE_FILE, RunStore
from medsplit.transport import transport_names

__all__ = ["ROOT", "SYNTH_DATA", "LAUNCH_FILE", "LOG_FILE", "JOB_FILE", "DESIGN_FILE", "Launch", "medsplit_argv",
           "run_transports", "run_argv", "job_argv", "env", "start", "resume", "launch", "launch_state", "stop",
           "escalate", "GRACE_SECONDS"]

ROOT = Path(__file__).resolve().parents[1]  # the checkout: `python -m sites.cli` works from here uninstalled
LAUNCH_FILE = "launch.json"
LOG_FILE = "launch.log"
#: what Launch says, before a run starts, of the data it writes (`dashboard.job` writes it)
SYNTH_DATA = ("Launch writes synthetic files for this design as written (`medsplit synth --for`): each site with "
              "its own data keys, shapes and labels. They are never shown here.")
JOB_FILE = "job.json"  # what the job runs: the design, transport, patients, seed, and whether it resumes
DESIGN_FILE = "design.yaml"  # the design as launched
GRACE_SECONDS = 10.0  # after Stop's SIGTERM, then SIGKILL
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


def env() -> dict[str, str]:
    """The children's environment: the checkout importable (a study's own encoder module too), output unbuffered."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [out.get("PYTHONPATH")])])
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out


def run_transports() -> tuple[str, ...]:
    """The transports `medsplit run --transport` accepts (the one transport registry)."""
    return tuple(transport_names())


def run_argv(experiment: str | Path, transport: str, run_dir: str | Path, *, resume: bool = False) -> list[str]:
    """`medsplit run EXP.yaml --transport T --run-dir DIR --quiet [--resume]`."""
    return [*medsplit_argv(), "run", str(experiment), "--transport", transport, "--run-dir", str(run_dir), "--quiet",
            *(["--resume"] if resume else [])]


def job_argv(run_dir: str | Path) -> list[str]:
    return [sys.executable, "-m", "dashboard.job", str(run_dir)]


def start(design: Mapping[str, Any], run_dir: str | Path, *, transport: str, patients: int, seed: int) -> Launch:
    """Queue a run of ``design`` in ``run_dir`` (a new folder) and start its job; returns at once."""
    run_dir = Path(run_dir)
    if (run_dir / RUNSTORE_FILE).exists() or (run_dir / JOB_FILE).exists():
        raise ConfigError(f"{run_dir.name} already holds a run", hint="pick another run name")
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {"design": dict(design), "transport": transport, "patients": int(patients), "seed": int(seed),
           "resume": False}
    (run_dir / JOB_FILE).write_text(json.dumps(job, indent=2))
    found = design.get("topology")
    topo: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    found = design.get("training")
    training: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    with RunStore(run_dir) as store:  # listed at once, as queued, while its data is being written
        store.set_info(name=run_dir.name, preset=topo.get("preset") or topo.get("factory"), transport=transport,
                       epochs=training.get("epochs", 5), seed=design.get("seed", 0), nopeek=topo.get("nopeek", 0.0),
                       queued=time.time())
        store.set_status("queued", "writing the design's synthetic data")
    return launch(job_argv(run_dir), run_dir)


def resume(run_dir: str | Path) -> Launch:
    """Start a stopped (or failed) run's job again: `medsplit run --resume` from its checkpoints."""
    run_dir = Path(run_dir)
    state = launch_state(run_dir)
    if state is not None and state["alive"]:
        raise ConfigError(f"{run_dir.name} is still running", hint="stop it first")
    job = json.loads((run_dir / JOB_FILE).read_text())
    job["resume"] = True
    (run_dir / JOB_FILE).write_text(json.dumps(job, indent=2))
    with RunStore(run_dir) as store:
        store.set_status("queued", "resuming from its checkpoints")
    return launch(job_argv(run_dir), run_dir)


def launch(argv: Sequence[str], run_dir: str | Path) -> Launch:
    """Start ``argv`` in its own session (so that stopping it stops its children), output to RUN_DIR/launch.log."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / LOG_FILE
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ROOT, env=env(), start_new_session=True)
    _PROCS[proc.pid] = proc
    record = Launch(proc.pid, tuple(argv), run_dir, log, time.time())
    (run_dir / LAUNCH_FILE).write_text(json.dumps({"pid": record.pid, "argv": list(record.argv),
                                                   "log": LOG_FILE, "started": record.started}, indent=2))
    return record


def launch_state(run_dir: str | Path) -> dict[str, Any] | None:
    """{pid, command, alive, returncode, log, stop_requested} for a run the dashboard started; None otherwise."""
    path = Path(run_dir) / LAUNCH_FILE
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(rec["pid"])
    proc = _PROCS.get(pid)
    returncode = proc.poll() if proc is not None else None
    alive = returncode is None and (proc is not None or _ours(pid, rec.get("argv", [])))
    argv = rec.get("argv", [])
    command = "dashboard job (data, then `medsplit run`)" if argv[2:3] == ["dashboard.job"] else \
        " ".join(argv[2:4]).replace("sites.cli", "medsplit")
    return {"pid": pid, "command": command, "alive": alive, "returncode": returncode,
            "log": str(path.parent / LOG_FILE), "stop_requested": rec.get("stop_requested")}


def _ours(pid: int, argv: Sequence[str]) -> bool:
    """Whether ``pid`` is still the process we started (its command line matches), not a reused PID."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [c.decode(errors="replace") for c in cmdline if c] == list(argv)


def stop(run_dir: str | Path, grace: float = GRACE_SECONDS, wait: bool = False) -> bool:
    """Send SIGTERM to a run this dashboard started (its process group) and note when; the run records that it
    is stopping, then stopped. With ``wait``, block until it has exited (SIGKILL after ``grace`` seconds).
    Returns whether a process was signalled."""
    run_dir = Path(run_dir)
    state = launch_state(run_dir)
    if not state or not state["alive"]:
        return False
    path = run_dir / LAUNCH_FILE
    rec = json.loads(path.read_text())
    rec["stop_requested"] = time.time()
    path.write_text(json.dumps(rec, indent=2))
    try:
        os.killpg(state["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    if wait:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (launch_state(run_dir) or {}).get("alive"):
            time.sleep(0.1)
        escalate(run_dir, grace=0.0)
    return True


def escalate(run_dir: str | Path, grace: float = GRACE_SECONDS) -> bool:
    """A run that has not exited ``grace`` seconds after Stop is killed (SIGKILL to its group) and, if its store
    does not say how it ended, recorded as stopped with that reason. Returns whether it was killed."""
    run_dir = Path(run_dir)
    state = launch_state(run_dir)
    if not state or not state["alive"] or not state["stop_requested"]:
        return False
    if time.time() - float(state["stop_requested"]) < grace:
        return False
    try:
        os.killpg(state["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (launch_state(run_dir) or {}).get("alive"):
        time.sleep(0.1)
    if (run_dir / RUNSTORE_FILE).exists():
        with RunStore(run_dir) as store:
            if store.info().get("status") not in FINAL_STATUSES:
                store.set_status("stopped", f"killed: it did not stop within {grace:.0f} s of Stop's SIGTERM",
                                 unless_final=True)
    return True
