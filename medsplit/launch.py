"""Starting nodes: `medsplit server`, `medsplit site`, and every party of an experiment as local processes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from .auth import Credentials
from .errors import ConfigError, MedsplitError
from .experiment import Experiment, load_experiment
from .node import Node, NodeOptions, host_party
from .plan import compile_topology

__all__ = ["server_options", "site_options", "run_processes", "secret_env_name"]

_NODE_KEYS = ("experiment", "server", "party", "secret_env", "secret_file", "private_key", "run_dir")


def secret_env_name(party: str) -> str:
    """The environment variable a party's secret is read from when the config names none."""
    return "MEDSPLIT_SECRET_" + "".join(c if c.isalnum() else "_" for c in party).upper()


def _member_credentials(exp: Experiment, parties: list[str]) -> dict[str, Credentials]:
    """What the host knows of every other party: the experiment's entry, else MEDSPLIT_SECRET_<PARTY>."""
    out = {}
    by_party = {s.party: s for s in exp.sites}
    for party in parties:
        entry = by_party.get(party)
        secret = entry.secret() if entry else None
        if secret is None and os.environ.get(secret_env_name(party)):
            secret = os.environ[secret_env_name(party)].encode()
        public = entry.public_key if entry else None
        if secret or public:
            out[party] = Credentials(secret=secret, public_key=public)
    return out


def server_options(experiment: str, *, party: str | None, host: str | None, port: int | None,
                   run_dir: str | None, fresh: bool, transport: str = "gloo", out: TextIO | None = None) -> NodeOptions:
    """`medsplit server`: the host party by default; ``party`` runs another non-site party (a relay)."""
    exp = load_experiment(experiment)
    plan = compile_topology(exp.build_topology())
    host_name = host_party(plan)
    party = party or host_name
    if plan.parties.get(party) is None:
        raise ConfigError(f"experiment '{exp.name}' has no party '{party}'",
                          hint=f"its parties are: {', '.join(plan.parties)}")
    if plan.parties[party].data:
        raise ConfigError(f"party '{party}' is a site: start it with `medsplit site --config SITE.yaml`")
    members = [p for p in plan.parties if p != host_name]
    creds = None
    if party != host_name:
        secret = os.environ.get(secret_env_name(party))
        creds = Credentials(secret=secret.encode()) if secret else None
    default_dir = exp.server.run_dir if party == host_name else exp.server.run_dir / party
    return NodeOptions(exp, party, Path(run_dir) if run_dir else default_dir, host=host or exp.server.host,
                       port=port if port is not None else exp.server.port, credentials=creds,
                       members=_member_credentials(exp, members) if party == host_name else {}, fresh=fresh,
                       transport=transport, out=out)


def site_options(config: str, *, experiment: str | None, server: str | None, party: str | None,
                 run_dir: str | None, fresh: bool, transport: str = "gloo", out: TextIO | None = None) -> NodeOptions:
    """`medsplit site --config SITE.yaml`: the site's `node:` section, overridden by the command line."""
    from data_adapters.config import load_site_config

    cfg_path = Path(config)
    cfg = load_site_config(cfg_path)
    node = dict(getattr(cfg, "node", None) or {})
    for key in node:
        if key not in _NODE_KEYS:
            raise ConfigError(f"{cfg_path}: key 'node.{key}': unknown key", hint=f"allowed: {', '.join(_NODE_KEYS)}")
    base = cfg_path.resolve().parent
    exp_path = experiment or (str(base / node["experiment"]) if node.get("experiment") else None)
    if not exp_path:
        raise ConfigError(f"{cfg_path}: key 'node.experiment': missing",
                          hint="name the experiment file this site joins (a copy reviewed by the site), "
                               "or pass --experiment")
    exp = load_experiment(exp_path)
    address = server or node.get("server") or f"{exp.server.host}:{exp.server.port}"
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{cfg_path}: key 'node.server': '{address}' is not HOST:PORT")
    entry = next((s for s in exp.sites if s.name == cfg.site), None)
    party = party or node.get("party") or (entry.party if entry else None)
    if party is None:
        raise ConfigError(f"site '{cfg.site}' is not listed in experiment '{exp.name}'",
                          hint=f"listed sites: {', '.join(s.name for s in exp.sites)}; or pass --party")
    secret = None
    if node.get("secret_env"):
        value = os.environ.get(node["secret_env"])
        if not value:
            raise ConfigError(f"{cfg_path}: node.secret_env names {node['secret_env']}, which is not set",
                              hint=f"export {node['secret_env']}=<the secret agreed with the server>")
        secret = value.encode()
    elif node.get("secret_file"):
        secret = (base / node["secret_file"]).read_bytes().strip()
    elif os.environ.get(secret_env_name(party)):
        secret = os.environ[secret_env_name(party)].encode()
    private = base / node["private_key"] if node.get("private_key") else None
    creds = Credentials(secret=secret, private_key=private) if (secret or private) else None
    default_dir = base / node["run_dir"] if node.get("run_dir") else base / "runs" / cfg.site
    return NodeOptions(exp, party, Path(run_dir) if run_dir else default_dir, host=host, port=int(port),
                       credentials=creds, site_config=cfg_path, fresh=fresh, transport=transport, out=out)


def run_node(opts: NodeOptions) -> dict | None:
    return Node(opts).run()


# --- every party as a local process -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(experiment: str | Path, *, transport: str = "gloo", run_dir: str | Path | None = None,
                  out: TextIO | None = None, timeout: float = 3600.0, fresh: bool = True) -> dict:
    """Start the server and every other party as child processes on 127.0.0.1 and follow the server's log.

    Each party gets a random secret for this run (in its environment), its own run directory and log
    file; the call returns the server's summary, or raises with the failing party's last log lines.
    """
    out = out or sys.stdout
    exp = load_experiment(experiment)
    plan = compile_topology(exp.build_topology())
    host = host_party(plan)
    run_dir = Path(run_dir) if run_dir else exp.server.run_dir
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = dict(os.environ)
    # The parties share this machine's cores and take turns computing: OpenMP threads spinning after their
    # work (the default) would steal the cores of the party whose turn it is.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for party in plan.parties:
        if party != host:
            env[secret_env_name(party)] = secrets.token_hex(32)
    # Sites whose experiment entry or site YAML names its own secret variable get the same secret there.
    from data_adapters.config import load_site_config

    for s in exp.sites:
        value = env[secret_env_name(s.party)]
        if s.secret_env:
            env[s.secret_env] = value
        if s.config is not None:
            node = getattr(load_site_config(s.config), "node", None) or {}
            if node.get("secret_env"):
                env[node["secret_env"]] = value
    cli = [sys.executable, "-m", "medsplit.cli"]
    commands = {host: cli + ["server", "--experiment", str(exp.path), "--port", str(port), "--run-dir",
                             str(run_dir), "--transport", transport] + (["--fresh"] if fresh else [])}
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
                                     str(run_dir / "sites" / party), "--transport", transport]
        else:
            commands[party] = cli + ["server", "--experiment", str(exp.path), "--party", party, "--port", str(port),
                                     "--host", "127.0.0.1", "--run-dir", str(run_dir / party),
                                     "--transport", transport]
        if fresh:
            commands[party].append("--fresh")
    procs: dict[str, subprocess.Popen] = {}
    files = {}
    try:
        for party, cmd in commands.items():
            files[party] = open(logs / f"{party}.log", "w")  # noqa: SIM115 - closed in finally
            procs[party] = subprocess.Popen(cmd, stdout=files[party], stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
            if party == host:
                time.sleep(0.5)  # the host opens the rendezvous store first
        print(f"started {len(procs)} processes on 127.0.0.1:{port} ({transport}); logs in {logs}", file=out)
        _follow(procs, host, logs / f"{host}.log", out, timeout)
        for party, proc in procs.items():
            if proc.wait(timeout=60) != 0:
                raise MedsplitError(f"party '{party}' exited with code {proc.returncode}:\n"
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
    summary = json.loads((run_dir / "summary.json").read_text())
    from .run import print_totals

    print_totals(summary, out)
    return summary


def _follow(procs: dict[str, subprocess.Popen], host: str, log: Path, out: TextIO, timeout: float) -> None:
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
            raise MedsplitError(f"party '{failed[0]}' failed (exit code {procs[failed[0]].returncode}):\n"
                                + _tail(log.parent / f"{failed[0]}.log"))
        if time.monotonic() > deadline:
            raise MedsplitError(f"the run did not finish within {timeout:.0f} s")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"
