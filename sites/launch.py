"""Every party of an experiment as a process on this machine (`medsplit run --transport gloo|rpc`, `predict`)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from data_adapters.config import load_site_config
from medsplit.config import load_experiment
from medsplit.errors import ConfigError, RunError
from medsplit.plan import compile_topology
from medsplit.runtime import host_party

from .forked import ForkedProcess
from .nodes import secret_env_name
from .provision import provision_experiment
from .run import print_totals

__all__ = ["run_processes", "free_port", "CLI"]

#: how a child process runs the medsplit command line
CLI = [sys.executable, "-m", "sites.cli"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the rendezvous of processes started on this machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(experiment: str | Path, *, transport: str = "gloo", run_dir: str | Path | None = None,
                  out: TextIO | None = None, timeout: float = 3600.0, fresh: bool = True,
                  predict_out: str | Path | None = None, share_imports: bool = False) -> dict[str, Any]:
    """Start the server and every other party as child processes on 127.0.0.1 and follow the server's log.

    Each party gets an identity provisioned for this run (RUN_DIR/identities, made anew each time) and a
    random secret (in its environment), its own run directory and log file; the call returns the server's
    summary, or raises with the failing party's last log lines.
    With ``predict_out`` the parties predict from their checkpoints in ``run_dir`` instead of training;
    each site that owns a task's labels writes its predictions to ``predict_out/<site>``. With
    ``share_imports`` every party is forked from one process that imported torch and medsplit once, so that
    they share those pages (many sites on one machine: ``sites/forked.py``).
    """
    out = out or sys.stdout
    exp = load_experiment(experiment)
    plan = compile_topology(exp.build_topology())
    host = host_party(plan)
    run_dir = Path(run_dir) if run_dir else exp.server.run_dir
    port = free_port()
    env = dict(os.environ)
    # The parties share this machine's cores and take turns computing: OpenMP threads spinning after their
    # work (the default) would steal the cores of the party whose turn it is.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for party in plan.parties:
        if party != host:
            env[secret_env_name(party)] = secrets.token_hex(32)
    # Sites whose experiment entry or site YAML names its own secret variable get the same secret there.
    for s in exp.sites:
        value = env[secret_env_name(s.party)]
        if s.secret_env:
            env[s.secret_env] = value
        if s.config is not None:
            node = load_site_config(s.config).node
            if node is not None and node.secret_env:
                env[node.secret_env] = value
    identities = run_dir / "identities"
    shutil.rmtree(identities, ignore_errors=True)  # every run its own keys: nothing to keep or leak later
    provision_experiment(experiment, identities)
    cli = CLI
    predict = ["--predict"] if predict_out is not None else []
    logs = run_dir / ("logs" if predict_out is None else "predict-logs")
    logs.mkdir(parents=True, exist_ok=True)
    commands = {host: cli + ["server", "--experiment", str(exp.path), "--port", str(port), "--run-dir",
                             str(run_dir), "--transport", transport, "--identity", str(identities / host)] + predict
                + (["--fresh"] if fresh and predict_out is None else [])}
    site_of = {s.party: s for s in exp.sites}
    for party in plan.parties:
        if party == host:
            continue
        if party in site_of:
            if site_of[party].config is None:
                raise ConfigError(f"site '{site_of[party].name}' has no 'config:' in {exp.path}",
                                  hint="running every party on this machine needs each site's YAML")
            commands[party] = cli + ["site", "--config", str(site_of[party].config), "--experiment", str(exp.path),
                                     "--server", f"127.0.0.1:{port}", "--party", party, "--run-dir",
                                     str(run_dir / "sites" / party), "--transport", transport,
                                     "--identity", str(identities / party)]
            if predict_out is not None:
                commands[party] += ["--predict", "--out", str(Path(predict_out) / site_of[party].name)]
        else:
            commands[party] = cli + ["server", "--experiment", str(exp.path), "--party", party, "--port", str(port),
                                     "--host", "127.0.0.1", "--run-dir", str(run_dir / party),
                                     "--transport", transport, "--identity", str(identities / party)] + predict
        if fresh and predict_out is None:
            commands[party].append("--fresh")
    procs: dict[str, subprocess.Popen[bytes] | ForkedProcess] = {}
    files = {}
    try:
        for party, cmd in commands.items():
            if share_imports:
                procs[party] = ForkedProcess(cmd[len(cli):], logs / f"{party}.log", env)
            else:
                files[party] = open(logs / f"{party}.log", "w")  # noqa: SIM115 - closed in finally
                procs[party] = subprocess.Popen(cmd, stdout=files[party], stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
            if party == host:
                time.sleep(0.5)  # the host opens the rendezvous store first
        print(f"started {len(procs)} processes on 127.0.0.1:{port} ({transport}); logs in {logs}", file=out)
        _follow(procs, host, logs / f"{host}.log", out, timeout)
        for party, proc in procs.items():
            if proc.wait(timeout=60) != 0:
                raise RunError(f"party '{party}' exited with code {proc.returncode}:\n"
                                    + _tail(logs / f"{party}.log"))
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # only the processes this call started, by PID
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        for fh in files.values():
            fh.close()
    if predict_out is not None:
        return {"status": "completed", "mode": "predict", "predictions": str(predict_out)}
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    print_totals(summary, out)
    return summary


def _follow(procs: dict[str, subprocess.Popen[bytes] | ForkedProcess], host: str, log: Path, out: TextIO,
            timeout: float) -> None:
    """Echo the server's log lines while it runs; stop early if any party dies with an error."""
    deadline = time.monotonic() + timeout
    pos = 0
    while True:
        if log.exists():
            with open(log) as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
            if chunk:
                out.write(chunk)
                out.flush()
        if procs[host].poll() is not None:
            return
        failed = [p for p, proc in procs.items() if proc.poll() not in (None, 0)]
        if failed:
            raise RunError(f"party '{failed[0]}' failed (exit code {procs[failed[0]].returncode}):\n"
                                + _tail(log.parent / f"{failed[0]}.log"))
        if time.monotonic() > deadline:
            raise RunError(f"the run did not finish within {timeout:.0f} s",
                           hint="see the parties' logs; raise the limit if the run is just long")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"
