"""`medsplit provision`: a study's identities (an Ed25519 key pair per party, the server's fingerprint, the list
of parties), one folder per party to hand over; revoking a party is one command.

    DIR/parties.json            every party's role, public key, fingerprint and whether it is revoked
    DIR/<party>/<party>.key     that party's private key (only in its own folder; mode 0600)
    DIR/<party>/<party>.pub     its public key
    DIR/<party>/server.pub      the server's public key, to pin (node.server_key)
    DIR/<party>/parties.json    a copy of the list
    DIR/<party>/README.txt      what the folder is and how to use it
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medsplit.errors import ConfigError
from medsplit.transport.secure import Identity, PeerTrust, fingerprint, public_key_pem

__all__ = ["provision", "provision_experiment", "revoke", "read_parties", "load_identity", "pinned_keys",
           "PARTIES_FILE"]

PARTIES_FILE = "parties.json"

_README = """\
medsplit identity of party '{party}' in study '{study}' ({role}).

  {party}.key    this party's private key: keep it here, readable by the node's user only; never send it
  {party}.pub    its public key (the server holds a copy in its {parties})
  server.pub     the server's public key: this party refuses any server that cannot sign with it
  {parties}   every party of the study and its key fingerprint; the server's is {server_fp}

Compare the server's fingerprint with the one the study's coordinator tells you by another channel (phone,
letter). Then run this party with its folder:
  {command}
or name the files in the site YAML's node section (paths relative to that YAML):
  node:
    private_key: {party}.key
    server_key: server.pub
    parties: {parties}
"""


def read_parties(path: str | os.PathLike) -> dict[str, Any]:
    """A study's parties.json, checked: each party's role, public key (hex), fingerprint, revoked flag."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the study's parties from {path}: {exc.strerror}",
                          hint="give the parties.json `medsplit provision` wrote") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}",
                          hint="give the parties.json `medsplit provision` wrote") from exc
    if not _well_formed(data):
        raise ConfigError(f"{path} is not a study's list of parties (or was edited by hand)",
                          hint="use the parties.json from `medsplit provision`, unchanged")
    return data


def _well_formed(data: Any) -> bool:
    if not (isinstance(data, dict) and isinstance(data.get("parties"), dict) and data.get("server") in data["parties"]):
        return False
    for entry in data["parties"].values():
        try:
            public = bytes.fromhex(entry["public_key"])
        except (TypeError, KeyError, ValueError):
            return False
        if len(public) != 32 or fingerprint(public) != entry.get("fingerprint"):
            return False
    return True


def pinned_keys(parties: dict[str, Any]) -> tuple[dict[str, bytes], set[str]]:
    """(party -> public key) of the parties not revoked, and the revoked ones."""
    keys, revoked = {}, set()
    for name, entry in parties["parties"].items():
        if entry.get("revoked"):
            revoked.add(name)
        else:
            keys[name] = bytes.fromhex(entry["public_key"])
    return keys, revoked


def load_identity(folder: str | os.PathLike, party: str) -> tuple[Identity, dict[str, Any]]:
    """A party's identity and the study's parties from the folder `medsplit provision` wrote for it."""
    folder = Path(folder)
    key = folder / f"{party}.key"
    if not key.is_file():
        raise ConfigError(f"{folder} holds no private key for party '{party}' ({key.name})",
                          hint=f"give the folder `medsplit provision` wrote for '{party}'")
    identity = Identity.load(key)
    parties = read_parties(folder / PARTIES_FILE)
    entry = parties["parties"].get(party)
    if entry is None or bytes.fromhex(entry["public_key"]) != identity.public:
        raise ConfigError(f"the key in {key} is not the one the study lists for party '{party}'",
                          hint="use this party's own folder from `medsplit provision`")
    return identity, parties


def provision(study: str, parties: Iterable[tuple[str, str]], server: str, out: str | os.PathLike) -> dict[str, Any]:
    """Writes a new study's identities under ``out`` (which must not hold one): ``parties`` is (name, role)."""
    out = Path(out)
    if (out / PARTIES_FILE).exists():
        raise ConfigError(f"{out} already holds a study's identities", hint="choose another folder, or revoke a party "
                                                                           "with `medsplit provision --revoke`")
    ids = {name: (role, Identity.generate()) for name, role in parties}
    listing = {"study": study, "server": server,
               "parties": {n: {"role": r, "public_key": i.public.hex(), "fingerprint": i.fingerprint, "revoked": False}
                           for n, (r, i) in ids.items()}}
    out.mkdir(parents=True, exist_ok=True)
    _write(out / PARTIES_FILE, listing)
    for name, (role, identity) in ids.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        folder.chmod(0o700)
        key = folder / f"{name}.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(identity.pem())
        (folder / f"{name}.pub").write_bytes(public_key_pem(identity.public))
        (folder / "server.pub").write_bytes(public_key_pem(ids[server][1].public))
        _write(folder / PARTIES_FILE, listing)
        command = (f"medsplit server --experiment EXP.yaml --identity {folder}" if role != "site"
                   else f"medsplit site --config SITE.yaml --identity {folder}")
        (folder / "README.txt").write_text(_README.format(party=name, study=study, role=role, parties=PARTIES_FILE,
                                                          server_fp=ids[server][1].fingerprint, command=command))
    return listing


def provision_experiment(experiment: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """``provision`` for every party of an experiment; its host (first server) is the study's server."""
    from medsplit.config import load_experiment
    from medsplit.plan import compile_topology
    from medsplit.runtime import host_party

    exp = load_experiment(experiment)
    plan = compile_topology(exp.build_topology())
    roles = {p.name: p.role for p in plan.topology.parties}
    return provision(exp.name, [(p, "site" if plan.parties[p].data else roles.get(p, "server")) for p in plan.parties],
                     host_party(plan), out)


def revoke(out: str | os.PathLike, party: str) -> dict[str, Any]:
    """Marks ``party`` revoked in the study's list and in every copy under ``out`` (the server reads its own)."""
    out = Path(out)
    listing = read_parties(out / PARTIES_FILE)
    if party not in listing["parties"]:
        raise ConfigError(f"study '{listing['study']}' has no party '{party}'",
                          hint=f"its parties: {', '.join(listing['parties'])}")
    if party == listing["server"]:
        raise ConfigError("the server cannot be revoked", hint="provision a new study for a new server key")
    listing["parties"][party]["revoked"] = True
    for path in [out / PARTIES_FILE, *sorted(out.glob(f"*/{PARTIES_FILE}"))]:
        _write(path, listing)
    return listing


def trust_entry(public: bytes | None, psk: bytes | None) -> PeerTrust | None:
    return PeerTrust(public_key=public, psk=psk) if (public or psk) else None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
