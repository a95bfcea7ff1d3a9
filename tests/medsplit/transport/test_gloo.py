"""GlooTransport between real processes on 127.0.0.1: the test process is the server, children are sites."""

from __future__ import annotations

import datetime
import threading
import time
import uuid

import pytest
import torch
from torch.distributed import TCPStore

from medsplit.errors import PeerTimeout, ProtocolError, TransportError
from medsplit.transport import NameTable
from medsplit.transport.gloo import GlooTransport
from medsplit.transport.header import Header, encode
from medsplit.transport.secure import Trust
from medsplit.wire import Expect, Kind, Message, Wire
from medsplit.wire.meter import Meter
from sites.launch import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PARTIES = ["server", "site-a", "site-b"]
EDGES = ["a->s", "b->s", "enc->head"]
NAMES = NameTable(PARTIES, EDGES)
EDGE_OF = {"site-a": "a->s", "site-b": "b->s"}
TIMEOUT = 20.0


SECRET = b"test-secret"  # the children's default (_party.py --secret)


def _server(closing, peers, run_id, **kw) -> GlooTransport:
    kw.setdefault("trust", Trust.shared(SECRET, peers))
    kw.setdefault("hub", "server")
    t = GlooTransport("server", peers, NAMES, "127.0.0.1", 0, True, run_id, timeout=TIMEOUT, **kw)
    closing(t)
    return t


def _site(spawn, name, port, run_id, *extra):
    return spawn("--party", name, "--peers", "server", "--parties", ",".join(PARTIES), "--edges", ",".join(EDGES),
                 "--port", str(port), "--run-id", run_id, "--timeout", str(TIMEOUT), *extra)


def _connected(child) -> dict:
    child.expect("port")
    return child.expect("connected")


def _spec(dtype: str, shape, seed: int) -> dict:
    return {"dtype": dtype, "shape": list(shape), "seed": seed}


def _recv_checked(srv, driver, site, specs, first_step, kind=Kind.ACTIVATION, phase="train"):
    for i, spec in enumerate(specs):
        m = srv.recv(site, "server", timeout=TIMEOUT, awaiting=f"test message {i} from {site}")
        want = driver.make_tensor(spec)
        assert (m.step, m.edge, m.kind, m.src, m.dst, m.phase) == (first_step + i, EDGE_OF[site], kind, site,
                                                                     "server", phase)
        assert m.tensor.dtype == want.dtype and m.tensor.shape == want.shape
        assert torch.equal(m.tensor, want), f"message {i} ({spec}) arrived changed"


def _exchange(srv, child, driver, site, step, seed):
    """One round trip: the site sends an activation, the server answers with a gradient."""
    spec = _spec("float32", (4, 8), seed)
    child.cmd("send", to="server", step=step, edge=EDGE_OF[site], specs=[spec])
    child.expect("sent")
    _recv_checked(srv, driver, site, [spec], step)
    back = _spec("float32", (4, 8), seed + 1)
    srv.send(Message(step, EDGE_OF[site], Kind.GRADIENT, "server", site, driver.make_tensor(back)))
    child.cmd("recv", **{"from": "server"}, specs=[back])
    assert child.expect("received")["messages"] == [
        {"step": step, "edge": EDGE_OF[site], "kind": "gradient", "phase": "train", "equal": True}]


def _exit(child) -> None:
    child.cmd("exit")
    child.expect("exiting")
    assert child.finish() == 0, "".join(child.stderr)[-2000:]


def test_ordered_delivery_of_every_dtype_and_shape_without_waiting_for_the_receiver(spawn, closing, driver):
    run = uuid.uuid4().hex
    srv = _server(closing, ["site-a"], run)
    a = _site(spawn, "site-a", srv.port, run)
    srv.connect()
    assert _connected(a)["generation"] == {"server": 0} and srv.generation("site-a") == 0
    shapes = [(), (0, 3), (3,), (2, 3, 4), (1, 2, 1, 2, 1, 2, 1, 2)]
    dtypes = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool"]
    specs = [_spec(d, s, 10 * i + j) for i, d in enumerate(dtypes) for j, s in enumerate(shapes)]
    specs.append(_spec("float32", (5, 1000, 1000), 999))  # 20 MB
    # Every send returns before the server calls recv at all: the engine relies on it.
    a.cmd("send", to="server", step=1, edge="a->s", specs=specs)
    assert a.expect("sent")["count"] == len(specs)
    _recv_checked(srv, driver, "site-a", specs, 1)
    back = [_spec("float32", (5, 1000, 1000), 1), _spec("bfloat16", (3, 3), 2), _spec("float64", (), 3)]
    for i, spec in enumerate(back):
        tensor = driver.make_tensor(spec)
        srv.send(Message(100 + i, "a->s", Kind.GRADIENT, "server", "site-a", tensor, "eval"))
        tensor.zero_()  # the sender may reuse its tensor at once: sealing made the bytes that go out
    srv.flush()
    a.cmd("recv", **{"from": "server"}, specs=back)
    assert a.expect("received")["messages"] == [
        {"step": 100 + i, "edge": "a->s", "kind": "gradient", "phase": "eval", "equal": True} for i in range(3)]
    # A site that exits without closing its transport still exits cleanly, and says goodbye on the way out.
    a.cmd("quit")
    a.expect("exiting")
    assert a.finish() == 0, "".join(a.stderr)[-2000:]
    with pytest.raises(TransportError, match="party 'site-a' closed its connection to 'server'.*process exiting"):
        srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="anything")


def test_recv_timeout_names_the_peer_and_the_connection_survives_it(spawn, closing, driver):
    run = uuid.uuid4().hex
    srv = _server(closing, ["site-a"], run)
    a = _site(spawn, "site-a", srv.port, run)
    srv.connect()
    _connected(a)
    with pytest.raises(PeerTimeout) as err:
        srv.recv("site-a", "server", timeout=0.5, awaiting="activation on edge 'a->s' at step 3")
    assert "from 'site-a'" in str(err.value) and "activation on edge 'a->s' at step 3" in str(err.value)
    a.cmd("recv", **{"from": "server"}, timeout=0.3, awaiting="gradient at step 3", specs=[_spec("float32", (1,), 0)])
    err = a.expect("error")
    assert err["type"] == "PeerTimeout" and "from 'server'" in err["message"] and "gradient at step 3" in err["message"]
    _exchange(srv, a, driver, "site-a", 3, 7)  # a timed-out wait did not break the pair (gloo's own would)
    _exit(a)


def test_a_forged_header_is_refused_naming_the_peer_and_both_ends_reconnect(spawn, closing, driver):
    run = uuid.uuid4().hex
    srv = _server(closing, ["site-a"], run)
    a = _site(spawn, "site-a", srv.port, run)
    srv.connect()
    _connected(a)
    # site-a claims to be site-b: the connection it came on says otherwise.
    forged = encode(Header(1, "b->s", Kind.ACTIVATION, "site-b", "server", "train", torch.float32, (2, 2)), NAMES)
    a.cmd("raw_header", to="server", values=forged.tolist())
    a.expect("sent")
    for _ in range(2):  # refused, and every later recv on that connection says so too
        with pytest.raises(ProtocolError, match="peer 'site-a' sent a header with a bad src: 'site-b'"):
            srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="activation at step 1")
    # The server told the site why, so the site does not wait out its timeout either.
    a.cmd("recv", **{"from": "server"}, timeout=TIMEOUT, specs=[_spec("float32", (1,), 0)])
    err = a.expect("error")
    assert err["type"] == "TransportError" and "refused a message" in err["message"] and err["seconds"] < 5
    a.cmd("reconnect", peer="server")
    assert srv.reconnect("site-a") == 1
    assert a.expect("reconnected")["generation"] == 1
    _exchange(srv, a, driver, "site-a", 1, 3)
    _exit(a)


def test_a_killed_site_is_reported_and_its_restart_rejoins_while_the_others_go_on(spawn, closing, driver):
    run = uuid.uuid4().hex
    srv = _server(closing, ["site-a", "site-b"], run)
    a = _site(spawn, "site-a", srv.port, run)
    b = _site(spawn, "site-b", srv.port, run)
    srv.connect()
    assert _connected(a)["generation"] == _connected(b)["generation"] == {"server": 0}
    _exchange(srv, b, driver, "site-b", 1, 10)  # pairs are independent: either may go first
    _exchange(srv, a, driver, "site-a", 1, 20)

    a.kill()  # SIGKILL, mid-run
    with pytest.raises(TransportError) as err:  # the lost connection, at once: not the wait running out
        srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="activation on edge 'a->s' at step 2")
    assert not isinstance(err.value, PeerTimeout)
    text = str(err.value)
    assert "lost its connection to 'site-a' (generation 0)" in text and "at step 2" in text
    assert "reconnect('site-a')" in text
    with pytest.raises(TransportError, match="lost its connection to 'site-a'"):
        srv.send(Message(2, "a->s", Kind.GRADIENT, "server", "site-a", torch.zeros(1)))
    _exchange(srv, b, driver, "site-b", 2, 30)  # site-b never noticed

    a2 = _site(spawn, "site-a", srv.port, run)  # the same command: a restart
    # Let the restarted site reach the store first, so it (not the server) must see that it needs a new generation.
    store = TCPStore("127.0.0.1", srv.port, None, False, datetime.timedelta(seconds=TIMEOUT))
    deadline = time.monotonic() + TIMEOUT
    while not store.check([f"medsplit/{run}/server|site-a/gen1/joined/site-a"]):
        assert time.monotonic() < deadline, "the restarted site never asked for generation 1"
        time.sleep(0.05)
    assert srv.reconnect("site-a") == 1
    assert _connected(a2)["generation"] == {"server": 1}
    _exchange(srv, a2, driver, "site-a", 2, 40)
    _exchange(srv, b, driver, "site-b", 3, 50)
    assert (srv.generation("site-a"), srv.generation("site-b")) == (1, 0)

    # Once more, the other way round: the server moves on first, and the next restart follows it.
    a2.kill()
    with pytest.raises(TransportError, match="lost its connection to 'site-a' \\(generation 1\\)"):
        srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="activation on edge 'a->s' at step 3")
    result: list = []
    waiting = threading.Thread(target=lambda: result.append(srv.reconnect("site-a")), daemon=True)
    waiting.start()
    a3 = _site(spawn, "site-a", srv.port, run)
    assert _connected(a3)["generation"] == {"server": 2}
    waiting.join(TIMEOUT)
    assert result == [2]
    _exchange(srv, a3, driver, "site-a", 3, 60)
    _exit(a3)
    _exit(b)


def test_engine_wire_over_gloo_one_split_step_matches_the_unsplit_gradient(spawn, closing, driver):
    run = uuid.uuid4().hex
    srv = _server(closing, ["site-a"], run)
    a = _site(spawn, "site-a", srv.port, run)
    srv.connect()
    _connected(a)
    a.cmd("wire_site", server="server")
    meter = Meter()
    wire = Wire(srv, meter, driver.wire_allowed("site-a", "server"), timeout=TIMEOUT)
    enc, head = driver.wire_models()
    x, y = driver.wire_batch()
    act = wire.recv(Expect(1, driver.WIRE_EDGE, Kind.ACTIVATION, "site-a", "server", (4,), torch.float32))
    assert torch.equal(act, enc(x).detach())
    act.requires_grad_(True)
    torch.nn.functional.mse_loss(head(act), y).backward()
    wire.send(Message(1, driver.WIRE_EDGE, Kind.GRADIENT, "server", "site-a", act.grad))
    done = a.expect("wire_done")
    assert done["max_diff"] < 1e-6
    # Each end metered the 5x4 float32 activation out and the gradient back (80 bytes each way).
    assert done["bytes"] == {"site-a": {"sent": 80, "received": 80}}
    assert meter.bytes_by_party() == {"server": {"sent": 80, "received": 80}}
    _exit(a)


def test_connect_names_the_peer_that_never_came(closing):
    srv = _server(closing, ["site-a", "site-b"], uuid.uuid4().hex)
    with pytest.raises(TransportError, match=r"could not connect to \['site-a', 'site-b'\].*'site-a'.*generation 0"):
        srv.connect(timeout=1.0)


def test_a_site_without_a_server_fails_within_its_timeout():
    port = free_port()  # nothing listens there
    with pytest.raises(TransportError, match=r"could not reach the rendezvous store at 127.0.0.1:\d+"):
        GlooTransport("site-a", ["server"], NAMES, "127.0.0.1", port, False, "x", timeout=1.0,
                      trust=Trust.shared(SECRET, ["server"]))


def test_a_restarted_server_is_rejoined_by_a_site_that_kept_running(spawn, driver):
    run = uuid.uuid4().hex
    args = ("--parties", ",".join(PARTIES), "--edges", ",".join(EDGES), "--run-id", run, "--timeout", str(TIMEOUT))
    srv = spawn("--party", "server", "--peers", "site-a", "--port", "0", "--is-host", *args)
    port = srv.expect("port")["port"]
    site = spawn("--party", "site-a", "--peers", "server", "--port", str(port), *args)
    srv.expect("connected")
    _connected(site)
    spec = _spec("float32", (2, 3), 1)

    def round_trip(server, step):
        site.cmd("send", to="server", step=step, edge="a->s", specs=[spec])
        site.expect("sent")
        server.cmd("recv", **{"from": "site-a"}, specs=[spec])
        assert server.expect("received")["messages"][0]["equal"]

    round_trip(srv, 1)
    srv.kill()
    site.cmd("recv", **{"from": "server"}, specs=[spec])
    err = site.expect("error")
    assert err["type"] == "TransportError" and "lost its connection to 'server'" in err["message"]
    srv2 = spawn("--party", "server", "--peers", "site-a", "--port", str(port), "--is-host", *args)
    assert srv2.expect("port")["port"] == port
    site.cmd("reconnect", peer="server")
    # A new store knows no generations: both ends start again from 0.
    assert site.expect("reconnected")["generation"] == 0
    assert srv2.expect("connected")["generation"] == {"site-a": 0}
    round_trip(srv2, 2)
    for p in (srv2, site):
        _exit(p)
