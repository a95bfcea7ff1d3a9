"""`medsplit provision`: a study's identities on disk, readable by the parties they belong to, and revocation."""

from __future__ import annotations

import json
import stat

import pytest

from medsplit.errors import ConfigError
from medsplit.transport.secure import Identity, fingerprint, load_public_key
from sites.cli import main
from sites.cohort import demo_experiment
from sites.nodes import server_options, site_options


@pytest.fixture
def experiment(tmp_path):
    return demo_experiment("vanilla", sites=1, patients=12, seed=1, root=tmp_path / "data", training={"epochs": 1})


def test_provision_writes_one_folder_per_party_and_the_list(tmp_path, experiment, capsys):
    out = tmp_path / "study"
    assert main(["provision", str(out), "--experiment", str(experiment)]) == 0
    printed = capsys.readouterr().out
    listing = json.loads((out / "parties.json").read_text())
    assert listing["server"] == "server" and set(listing["parties"]) == {"server", "hospital"}
    assert listing["parties"]["hospital"]["role"] == "site" and listing["parties"]["server"]["role"] == "server"
    for party, entry in listing["parties"].items():
        folder = out / party
        key = folder / f"{party}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
        identity = Identity.load(key)
        assert identity.public.hex() == entry["public_key"] and identity.fingerprint == entry["fingerprint"]
        assert entry["fingerprint"] in printed
        assert load_public_key(folder / "server.pub") == bytes.fromhex(listing["parties"]["server"]["public_key"])
        assert sorted(p.name for p in folder.glob("*.key")) == [f"{party}.key"], "a folder holds its own key only"
        assert fingerprint(load_public_key(folder / "server.pub")) in (folder / "README.txt").read_text()
    with pytest.raises(ConfigError, match="already holds a study"):
        main_raise(["provision", str(out), "--experiment", str(experiment)])


def main_raise(argv):
    from sites.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def test_a_node_built_from_its_folder_pins_the_server_and_knows_the_sites(tmp_path, experiment, monkeypatch):
    main(["provision", str(tmp_path / "study"), "--experiment", str(experiment)])
    for k in [k for k in list(__import__("os").environ) if k.startswith("MEDSPLIT_SECRET_")]:
        monkeypatch.delenv(k)
    listing = json.loads((tmp_path / "study" / "parties.json").read_text())
    server = server_options(experiment, identity=tmp_path / "study" / "server")
    assert server.trust.identity.public.hex() == listing["parties"]["server"]["public_key"]
    assert server.trust.peer("hospital").public_key.hex() == listing["parties"]["hospital"]["public_key"]
    site_yaml = next(p for p in experiment.parent.rglob("site.yaml"))
    site = site_options(site_yaml, experiment=str(experiment), identity=tmp_path / "study" / "hospital")
    assert site.trust.peer("server").public_key.hex() == listing["parties"]["server"]["public_key"]
    # Without a server key or a secret, a site could not tell the real server from an impostor: refused.
    with pytest.raises(ConfigError, match="no way to tell the real server from an impostor"):
        site_options(site_yaml, experiment=str(experiment))
    # Another party's folder is not this party's identity.
    with pytest.raises(ConfigError, match="holds no private key for party 'hospital'"):
        site_options(site_yaml, experiment=str(experiment), identity=tmp_path / "study" / "server")


def test_revoking_a_party_is_one_command_and_the_server_refuses_it(tmp_path, experiment, capsys):
    out = tmp_path / "study"
    main(["provision", str(out), "--experiment", str(experiment)])
    assert main(["provision", str(out), "--revoke", "hospital"]) == 0
    assert "revoked party 'hospital'" in capsys.readouterr().out
    for path in [out / "parties.json", *out.glob("*/parties.json")]:
        assert json.loads(path.read_text())["parties"]["hospital"]["revoked"] is True
    server = server_options(experiment, identity=out / "server")
    assert server.trust.peer("hospital") is None and "hospital" in server.trust.revoked
    assert main(["provision", str(out), "--revoke", "server"]) == 2
    assert "the server cannot be revoked" in capsys.readouterr().err
    (out / "server" / "parties.json").write_text((out / "server" / "parties.json").read_text().replace("a", "b", 3))
    with pytest.raises(ConfigError, match="not a study's list of parties"):
        server_options(experiment, identity=out / "server")
