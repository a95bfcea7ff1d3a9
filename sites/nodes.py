"""`medsplit server` and `medsplit site`: a node's options from the experiment, the site YAML and the command line.

Credentials become the node's ``Trust``: its own identity (a provisioned key), and what it requires of each
peer: the host of every member, a member of the host (the pinned server key and/or the shared secret).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from data_adapters.config import load_site_config
from data_adapters.site_data import open_site_data
from medsplit.config import Experiment, load_experiment
from medsplit.errors import ConfigError
from medsplit.plan import compile_topology
from medsplit.runtime import NodeOptions, host_party
from medsplit.transport.secure import Identity, PeerTrust, Trust, load_public_key

from .provision import load_identity, pinned_keys, read_parties

__all__ = ["server_options", "site_options", "secret_env_name", "member_trust"]


def secret_env_name(party: str) -> str:
    """The environment variable a party's secret is read from when the config names none."""
    return "MEDSPLIT_SECRET_" + "".join(c if c.isalnum() else "_" for c in party).upper()


def member_trust(exp: Experiment, parties: list[str], pinned: dict[str, bytes]) -> dict[str, PeerTrust]:
    """What the host requires of every other party: its provisioned key (``pinned``) or the experiment's
    public_key, and its secret (the experiment's entry, else MEDSPLIT_SECRET_<PARTY>), where given."""
    out = {}
    by_party = {s.party: s for s in exp.sites}
    for party in parties:
        entry = by_party.get(party)
        secret = entry.secret() if entry else None
        if secret is None and os.environ.get(secret_env_name(party)):
            secret = os.environ[secret_env_name(party)].encode()
        public = pinned.get(party) or (load_public_key(entry.public_key, what=f"site '{entry.name}' public_key")
                                       if entry and entry.public_key else None)
        if secret or public:
            out[party] = PeerTrust(public_key=public, psk=secret)
    return out


def _identity(identity: str | os.PathLike | None, party: str) -> tuple[Identity | None, dict[str, bytes], set[str]]:
    """This party's key and the study's pinned keys and revocations from a provisioned folder (or nothing)."""
    if identity is None:
        return None, {}, set()
    me, parties = load_identity(identity, party)
    keys, revoked = pinned_keys(parties)
    return me, keys, revoked


def server_options(experiment: str | os.PathLike, *, party: str | None = None, host: str | None = None,
                   port: int | None = None, run_dir: str | os.PathLike | None = None, fresh: bool = False,
                   transport: str = "gloo", out: TextIO | None = None,
                   predict_out: str | os.PathLike | None = None, identity: str | os.PathLike | None = None,
                   rpc_off_loopback: bool = False) -> NodeOptions:
    """`medsplit server`: the host party by default; ``party`` runs another non-site party (a relay).

    ``identity``: the folder `medsplit provision` wrote for this party (its key and the study's parties).
    """
    exp = load_experiment(experiment)
    plan = compile_topology(exp.build_topology())
    host_name = host_party(plan)
    party = party or host_name
    if party not in plan.parties:
        raise ConfigError(f"experiment '{exp.name}' has no party '{party}'",
                          hint=f"its parties are: {', '.join(plan.parties)}")
    if plan.parties[party].data:
        raise ConfigError(f"party '{party}' is a site: start it with `medsplit site --config SITE.yaml`")
    me, pinned, revoked = _identity(identity, party)
    if party == host_name:
        trust = Trust(me, member_trust(exp, [p for p in plan.parties if p != host_name], pinned), revoked)
    else:
        secret = os.environ.get(secret_env_name(party))
        trust = _member_trust(me, pinned, revoked, host_name, pinned.get(host_name),
                              secret.encode() if secret else None, f"party '{party}'",
                              f"--identity (from `medsplit provision`) or {secret_env_name(party)}")
    default_dir = exp.server.run_dir if party == host_name else exp.server.run_dir / party
    return NodeOptions(exp, party, Path(run_dir) if run_dir else default_dir, host=host or exp.server.host,
                       port=port if port is not None else exp.server.port, trust=trust, fresh=fresh,
                       transport=transport, out=out, predict_out=Path(predict_out) if predict_out else None,
                       rpc_off_loopback=rpc_off_loopback)


def _member_trust(me: Identity | None, pinned: dict[str, bytes], revoked: set[str], host: str, server_key: bytes | None,
                  secret: bytes | None, who: str, fix: str) -> Trust:
    """A member's trust: the host by its pinned key and/or the shared secret; other parties by their pinned keys
    (the host adds a fresh pair key for them each session)."""
    if server_key is None and secret is None:
        raise ConfigError(f"{who} has no way to tell the real server from an impostor: no server key and no secret",
                          hint=f"set {fix}")
    peers = {p: PeerTrust(public_key=k) for p, k in pinned.items() if p != host}
    peers[host] = PeerTrust(public_key=server_key, psk=secret)
    return Trust(me, peers, revoked)


def site_options(config: str | os.PathLike, *, experiment: str | None = None, server: str | None = None,
                 party: str | None = None, run_dir: str | os.PathLike | None = None, fresh: bool = False,
                 transport: str = "gloo", out: TextIO | None = None,
                 predict_out: str | os.PathLike | None = None, identity: str | os.PathLike | None = None,
                 rpc_off_loopback: bool = False) -> NodeOptions:
    """`medsplit site --config SITE.yaml`: the site's `node:` section, overridden by the command line.

    ``identity``: the folder `medsplit provision` wrote for this site; it stands for node.private_key,
    node.server_key and node.parties.

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
    host_name = host_party(compile_topology(exp.build_topology()))
    if identity is not None:
        me, pinned, revoked = _identity(identity, party)
    else:
        me = Identity.load(base / node.private_key) if node and node.private_key else None
        pinned, revoked = pinned_keys(read_parties(base / node.parties)) if node and node.parties else ({}, set())
    server_key = pinned.get(host_name)
    if node and node.server_key:
        server_key = load_public_key(base / node.server_key, what=f"{cfg_path}: node.server_key")
        if pinned.get(host_name) not in (None, server_key):
            raise ConfigError(f"{cfg_path}: node.server_key is not the server key in node.parties",
                              hint="use server.pub and parties.json from the same `medsplit provision`")
    trust = _member_trust(me, pinned, revoked, host_name, server_key, secret, f"site '{cfg.site}' ({cfg_path})",
                          "node.server_key (the server.pub from `medsplit provision`), or node.secret_env")
    default_dir = base / node.run_dir if node and node.run_dir else base / "runs" / cfg.site
    site, _report = open_site_data(cfg)
    return NodeOptions(exp, party, Path(run_dir) if run_dir else default_dir, host=host, port=int(port),
                       trust=trust, site=site, fresh=fresh, transport=transport, out=out,
                       predict_out=Path(predict_out) if predict_out else None, rpc_off_loopback=rpc_off_loopback)
