"""RpcTransport between two real processes on 127.0.0.1, and its in-order mailbox."""

from __future__ import annotations

import uuid

import pytest

from medsplit.errors import ConfigError, TransportError
from medsplit.transport import NameTable
from medsplit.transport.rpc import RpcTransport, _Mailbox

PARTIES = ["server", "site-a"]
EDGES = ["a->s"]


def test_mailbox_releases_messages_in_sequence_order_whatever_the_arrival_order():
    box = _Mailbox()
    for seq in (2, 0, 3, 1, 5):
        box.put(seq, f"m{seq}")
    assert [box.queue.get_nowait() for _ in range(box.queue.qsize())] == ["m0", "m1", "m2", "m3"]
    box.put(4, "m4")
    assert [box.queue.get_nowait() for _ in range(2)] == ["m4", "m5"]


def test_party_names_must_be_rpc_worker_names():
    with pytest.raises(ConfigError, match="party name 'site a' cannot be an rpc worker name"):
        RpcTransport("site a", ["server"], NameTable(["site a", "server"], EDGES), "127.0.0.1", 0, True, "r")


def _party(spawn, name, peer, port, run, *extra):
    return spawn("--transport", "rpc", "--party", name, "--peers", peer, "--parties", ",".join(PARTIES),
                 "--edges", ",".join(EDGES), "--port", str(port), "--run-id", run, "--timeout", "20", *extra)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_rpc_delivers_in_order_and_a_timeout_names_the_peer(spawn, driver):
    run = uuid.uuid4().hex
    srv = _party(spawn, "server", "site-a", 0, run, "--is-host")
    port = srv.expect("port")["port"]
    site = _party(spawn, "site-a", "server", port, run)
    site.expect("port")
    srv.expect("connected")
    site.expect("connected")
    # Many small messages in flight at once (rpc may run them concurrently), then a large one.
    specs = [{"dtype": d, "shape": [3, i % 4], "seed": i} for i, d in enumerate(["float32", "bfloat16", "int64"] * 20)]
    specs.append({"dtype": "float32", "shape": [1000, 1000], "seed": 99})
    site.cmd("send", to="server", step=1, edge="a->s", specs=specs)
    assert site.expect("sent")["count"] == len(specs)
    srv.cmd("recv", **{"from": "site-a"}, specs=specs)
    got = srv.expect("received")["messages"]
    assert [m["step"] for m in got] == list(range(1, len(specs) + 1))
    assert all(m["equal"] and m["edge"] == "a->s" and m["kind"] == "activation" for m in got)

    srv.cmd("recv", **{"from": "site-a"}, timeout=0.5, awaiting="activation at step 99", specs=[specs[0]])
    err = srv.expect("error")
    assert err["type"] == "PeerTimeout" and "from 'site-a'" in err["message"]
    assert "activation at step 99" in err["message"] and err["seconds"] < 5

    back = {"dtype": "float64", "shape": [2, 2], "seed": 5}
    srv.cmd("send", to="site-a", step=7, edge="a->s", kind="gradient", specs=[back])
    srv.expect("sent")
    site.cmd("recv", **{"from": "server"}, specs=[back])
    assert site.expect("received")["messages"] == [
        {"step": 7, "edge": "a->s", "kind": "gradient", "phase": "train", "equal": True}]
    for p in (srv, site):  # a graceful rpc shutdown waits for every worker
        p.cmd("exit")
    for p in (srv, site):
        p.expect("exiting")
        assert p.finish() == 0, "".join(p.stderr)[-2000:]


def test_rpc_is_refused_off_loopback_unless_allowed_and_says_why(monkeypatch):
    with pytest.raises(ConfigError, match="rpc unpickles what peers send") as err:
        RpcTransport("site-a", ["server"], NameTable(PARTIES, EDGES), "10.0.0.5", 29500, False, "r")
    assert "--rpc-off-loopback" in str(err.value) and "gloo" in str(err.value)

    reached = []

    def store(host, *args, **kw):  # no packet leaves this machine: the store is never really opened
        reached.append(host)
        raise RuntimeError("not opened in this test")

    monkeypatch.setattr("medsplit.transport.rpc.TCPStore", store)
    with pytest.raises(TransportError, match="could not reach the rendezvous store at 10.0.0.5"):
        # allowed explicitly (one trust domain): it goes on to open the store
        RpcTransport("site-a", ["server"], NameTable(PARTIES, EDGES), "10.0.0.5", 29500, False, "r", allow_remote=True)
    assert reached == ["10.0.0.5"]
