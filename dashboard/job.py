"""`python -m dashboard.job RUN_DIR`: one run launched from the page, start to end. It writes the design's data,
runs `medsplit run` as its child, and sees that the run store says how the run ended (stopped, failed or
completed) whatever happened to the child."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from data_adapters.check import run_check
from medsplit.config.experiment import dump_experiment, load_experiment
from medsplit.runstore import FINAL_STATUSES, RunStore

from .launcher import DESIGN_FILE, JOB_FILE, LOG_FILE, ROOT, SYNTH_DATA, env, medsplit_argv, run_argv

__all__ = ["main", "prepare", "CHILD_GRACE"]

SYNTH_TIMEOUT = 600.0
CHILD_GRACE = 8.0  # seconds the run gets to record that it stopped, after SIGTERM, before it is killed
EXPERIMENT = "experiment.yaml"
REPORTS = "reports"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def prepare(run_dir: Path, job: dict[str, Any], log: TextIO) -> Path:
    """The design's data under RUN_DIR/data and RUN_DIR/experiment.yaml (the design as written, reading it), and
    each site's data check under RUN_DIR/reports (shown as counts). Returns the experiment's path."""
    design, data = job["design"], run_dir / "data"
    (run_dir / DESIGN_FILE).write_text(yaml.safe_dump(design, sort_keys=False))
    with RunStore(run_dir) as store:
        store.set_info(data=SYNTH_DATA)
    path = run_dir / EXPERIMENT
    argv = [*medsplit_argv(), "synth", "--for", str(run_dir / DESIGN_FILE), "--out", str(data),
            "--patients", str(job["patients"]), "--seed", str(job["seed"])]
    subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=env(),
                   check=True, timeout=SYNTH_TIMEOUT)
    written = load_experiment(data / EXPERIMENT)
    dump_experiment(dict(written.raw, server={**dict(written.raw.get("server") or {}), "run_dir": "."},
                         sites=[dict(s, config=f"data/{s['config']}") for s in written.raw["sites"]]), path)
    reports = run_dir / REPORTS
    reports.mkdir(exist_ok=True)
    for site in load_experiment(path).sites:
        if site.config is not None:  # exit 1 (some key loaded nothing) is for the run itself to explain
            with contextlib.redirect_stderr(log):
                run_check(config=site.config, json_path=reports / f"{site.name}.json", out=log)
    return path


def _finish(store: RunStore, child: subprocess.Popen | None) -> None:
    """After SIGTERM: the run's own handler records that it stopped; kill it if it takes too long."""
    store.set_status("stopping", "Stop: SIGTERM sent to the run", unless_final=True)
    if child is not None:
        try:
            child.wait(timeout=CHILD_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
    store.set_status("stopped", "stopped by SIGTERM (Stop)" if child is not None else
                     "stopped by SIGTERM (Stop) before training started", unless_final=True)


def main(argv: Sequence[str]) -> int:
    run_dir = Path(argv[0]).resolve()
    signal.signal(signal.SIGTERM, _interrupt)
    job = json.loads((run_dir / JOB_FILE).read_text())
    store = RunStore(run_dir)
    child = None
    try:
        if job.get("resume"):
            path = run_dir / EXPERIMENT
            store.set_info(stage="resuming from checkpoints")
        else:
            store.set_info(stage="writing synthetic data")
            with open(run_dir / LOG_FILE, "a") as log:
                path = prepare(run_dir, job, log)
        store.set_info(stage="training")
        with open(run_dir / LOG_FILE, "ab") as out:  # the same process group: Stop's SIGTERM reaches it too
            child = subprocess.Popen(run_argv(path, job["transport"], run_dir, resume=bool(job.get("resume"))),
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                                     env=env())
        code = child.wait()
    except KeyboardInterrupt:
        _finish(store, child)
        return 143
    except Exception as exc:  # noqa: BLE001 - whatever kept the run from starting is its reason
        print(f"dashboard job: {type(exc).__name__}: {exc}", file=sys.stderr)
        store.set_status("failed", f"could not start: {exc}"[:2000], unless_final=True)
        return 1
    finally:
        store.set_info(stage="")
    status = store.info().get("status")
    if status not in FINAL_STATUSES:  # the run ended without saying how (killed, crashed)
        store.set_status("failed", f"`medsplit run` exited with status {code} without recording how the run ended; "
                                   f"see {LOG_FILE}")
    store.close()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
