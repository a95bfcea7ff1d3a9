"""`medsplit server` and `medsplit site`: a node's options from the experiment, the site YAML and the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from data_adapters.config import load_site_config
from data_adapters.site_data import open_site_data
from medsplit.config import Experiment, load_experiment
from medsplit.errors import ConfigError
from medsplit.plan import compile_topology
from medsplit.runtime import Credentials, NodeOptions, host_party

__all__ = ["server_options", "site_options", "secret_env_name", "member_credentials"]


def secret_env_name(party: str) -> str:
    """The environment variable a party's secret is read from when the config names none."""
    return "MEDSPLIT_SECRET_" + "".join(c if c.isalnum() else "_" for c in party).upper()


def member_credentials(exp: Experiment, parties: list[str]) -> dict[str, Credentials]:
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


def server_options(experiment: str | os.PathLike, *, party: str | None = None, host: str | None = None,
                   port: int | None = None, run_dir: str | os.PathLike | None = None, fresh: bool = False,
                   transport: str = "gloo", out: TextIO | None = None,
                   predict_out: str | os.PathLike | None = None) -> NodeOptions:
    """`medsplit server`: the host party by default; ``party`` runs another non-site party (a relay)."""
    exp = load_experiment(experiment)
    plan = compile_topology(exp.build_topology())
    host_name = host_party(plan)
    party = party or host_name
    if party not in plan.parties:
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
                       members=member_credentials(exp, members) if party == host_name else {}, fresh=fresh,
                       transport=transport, out=out, predict_out=Path(predict_out) if predict_out else None)


def site_options(config: str | os.PathLike, *, experiment: str | None = None, server: str | None = None,
                 party: str | None = None, run_dir: str | os.PathLike | None = None, fresh: bool = False,
                 transport: str = "gloo", out: TextIO | None = None,
                 predict_out: str | os.PathLike | None = None) -> NodeOptions:
    """`medsplit site --config SITE.yaml`: the site's `node:` section, overridden by the command line.

    The site's data is opened here, through its own pipeline; only the node's engine sees it.
    """
    cfg_path = Path(config)
    cfg = load_site_config(cfg_path)
    node = cfg.node
    base = cfg_path.resolve().parent
    exp_path = experiment or (str(base / node.experiment) if node and node.experiment else None)
    if not exp_path:
        raise ConfigError(f"{cfg_path}: node.experiment: missing",
                          hint="name the experiment file this site joins (a copy reviewed by the site), "
                               "or pass --experiment")
    exp = load_experiment(exp_path)
    address = server or (node.server if node else None) or f"{exp.server.host}:{exp.server.port}"
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{cfg_path}: node.server: '{address}' is not HOST:PORT", hint="write e.g. 10.0.0.5:29500")
    entry = next((s for s in exp.sites if s.name == cfg.site), None)
    party = party or (node.party if node else None) or (entry.party if entry else None)
    if party is None:
        raise ConfigError(f"site '{cfg.site}' is not listed in experiment '{exp.name}'",
                          hint=f"listed sites: {', '.join(s.name for s in exp.sites)}; or pass --party")
    secret = node.read_secret(cfg_path.resolve()) if node else None
    if secret is None and os.environ.get(secret_env_name(party)):
        secret = os.environ[secret_env_name(party)].encode()
    private = base / node.private_key if node and node.private_key else None
    creds = Credentials(secret=secret, private_key=private) if (secret or private) else None
    default_dir = base / node.run_dir if node and node.run_dir else base / "runs" / cfg.site
    site, _report = open_site_data(cfg)
    return NodeOptions(exp, party, Path(run_dir) if run_dir else default_dir, host=host, port=int(port),
                       credentials=creds, site=site, fresh=fresh, transport=transport, out=out,
                       predict_out=Path(predict_out) if predict_out else None)
