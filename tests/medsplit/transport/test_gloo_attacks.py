"""GlooTransport attacked from real processes on 127.0.0.1: an impostor, injected bytes, a short payload, a flooding
peer, and a sniffer on the loopback interface. The test process is the server; children are sites or attackers."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import torch

from medsplit.errors import AuthenticationError, ProtocolError
from medsplit.transport import NameTable
from medsplit.transport.gloo import GlooTransport
from medsplit.transport.header import Header, encode
from medsplit.transport.secure import Trust
from medsplit.wire import Kind, Message

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PARTIES = ["server", "site-a"]
EDGES = ["a->s"]
NAMES = NameTable(PARTIES, EDGES)
TIMEOUT = 15.0
SECRET = b"test-secret"


def _server(closing, run, **kw) -> GlooTransport:
    t = GlooTransport("server", ["site-a"], NAMES, "127.0.0.1", 0, True, run, timeout=TIMEOUT,
                      trust=Trust.shared(SECRET, ["site-a"]), hub="server", **kw)
    closing(t)
    return t


def _child(spawn, port, run, *extra):
    return spawn("--party", "site-a", "--peers", "server", "--parties", ",".join(PARTIES), "--edges", ",".join(EDGES),
                 "--port", str(port), "--run-id", run, "--timeout", str(TIMEOUT), *extra)


def _spec(shape, seed):
    return {"dtype": "float32", "shape": list(shape), "seed": seed}


def _exchange(srv, child, driver, step):
    spec = _spec((4, 8), step)
    child.cmd("send", to="server", step=step, edge="a->s", specs=[spec])
    child.expect("sent")
    m = srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="an activation")
    assert m.step == step and torch.equal(m.tensor, driver.make_tensor(spec))


def _connected_pair(spawn, closing, **server_kw):
    run = uuid.uuid4().hex
    srv = _server(closing, run, **server_kw)
    site = _child(spawn, srv.port, run)
    site.expect("port")
    srv.connect()
    site.expect("connected")
    return srv, site


def test_an_impostor_without_credentials_cannot_take_the_pair_and_the_real_site_gets_it_next(spawn, closing, driver):
    run = uuid.uuid4().hex
    srv = _server(closing, run)
    impostor = _child(spawn, srv.port, run, "--secret", "guessed")
    impostor.expect("port")
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError, match="'site-a' could not authenticate party 'server' and left"):
        srv.connect()  # the impostor met the server in generation 0, and got no further than its proof
    assert time.monotonic() - t0 < TIMEOUT, "a failed handshake ends at once, not at the timeout"
    err = impostor.expect("error")
    assert "could not prove who it is" in err["message"] and "'server'" in err["message"]
    assert srv.connected == []
    site = _child(spawn, srv.port, run)  # the real one, in the next generation
    site.expect("port")
    assert srv.reconnect("site-a") == 1
    assert site.expect("connected")["generation"] == {"server": 1}
    _exchange(srv, site, driver, 1)


def test_bytes_injected_into_an_established_pair_are_refused_and_close_it(spawn, closing, driver):
    srv, site = _connected_pair(spawn, closing)
    # A well-formed plaintext header, as an intruder on the connection would write it: it does not verify.
    forged = encode(Header(1, "a->s", Kind.LABEL, "site-a", "server", "train", torch.float32, (8,)), NAMES)
    site.cmd("raw_frames", to="server", frames=[[1, list(forged.view(torch.uint8).tolist())]])
    site.expect("sent")
    with pytest.raises(ProtocolError, match="a message header from 'site-a' was refused: it does not verify"):
        srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="labels")
    assert srv.connected == []
    site.cmd("reconnect", peer="server")
    assert srv.reconnect("site-a") == 1
    site.expect("reconnected")
    _exchange(srv, site, driver, 2)


def test_a_payload_shorter_than_its_header_says_is_refused(spawn, closing, driver):
    srv, site = _connected_pair(spawn, closing)
    site.cmd("short_payload", to="server", step=1, edge="a->s", shape=[2, 4], payload_bytes=16)  # 2x4 float32 is 32
    site.expect("sent")
    with pytest.raises(ProtocolError, match="payload of a activation from 'site-a' was refused"):
        srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="an activation")
    # The site hears why at once instead of waiting out its timeout.
    site.cmd("recv", **{"from": "server"}, timeout=TIMEOUT, specs=[_spec((1,), 0)])
    err = site.expect("error")
    assert err["type"] == "TransportError" and "refused a message" in err["message"] and err["seconds"] < 5


def test_a_peer_over_its_quota_of_queued_bytes_is_cut_off(spawn, closing, driver):
    srv, site = _connected_pair(spawn, closing, max_queued_bytes=1 << 20)
    specs = [_spec((64, 1024), i) for i in range(8)]  # 8 x 256 KiB, sent while the server takes none
    site.cmd("send", to="server", step=1, edge="a->s", specs=specs)
    reply = site._lines.get(timeout=30)
    # The flooding site may learn why while it is still sending: the server told it and closed the pair.
    assert '"sent"' in reply or "is over its quota" in reply, reply
    got = []
    with pytest.raises(ProtocolError, match=r"peer 'site-a' is over its quota: 3 messages \(\d+ bytes\) are waiting"):
        for _ in specs:
            got.append(srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="an activation"))
    assert len(got) == 3, "what arrived within the quota is delivered, nothing after it"
    assert all(torch.equal(m.tensor, driver.make_tensor(s)) for m, s in zip(got, specs[:3], strict=True))


def test_a_sniffer_on_loopback_sees_no_tensor_label_control_value_or_secret(spawn, closing, driver, loopback_capture):
    loopback_capture.track(os.getpid())
    srv, site = _connected_pair(spawn, closing)
    loopback_capture.track(site.pid)
    marker = torch.full((256, 1024), 1234.5678)  # 1 MiB of one recognisable float
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0] * 4)
    srv.send(Message(1, "a->s", Kind.GRADIENT, "server", "site-a", marker))
    srv.send(Message(2, "a->s", Kind.LABEL, "server", "site-a", labels))
    srv.post("site-a", "epoch/0", {"val_auc": 0.987654321, "rows": 4242})
    srv.flush()
    spec = _spec((64, 1024), 77)
    site.cmd("send", to="server", step=3, edge="a->s", specs=[spec])
    site.expect("sent")
    srv.recv("site-a", "server", timeout=TIMEOUT, awaiting="an activation")
    time.sleep(0.5)
    loopback_capture.stop()
    sent = marker.numel() * 4 + driver.make_tensor(spec).numel() * 4
    # The capture works: it holds at least every payload byte, and the store's own (public) keys in clear.
    assert loopback_capture.total >= sent
    assert loopback_capture.find(f"medsplit/{srv.run_id}/store_id".encode())
    # What crossed is sealed: none of it appears in clear.
    assert not loopback_capture.find(torch.full((64,), 1234.5678).numpy().tobytes()), "activations in clear"
    assert not loopback_capture.find(driver.make_tensor(spec)[0, :64].numpy().tobytes()), "activations in clear"
    assert not loopback_capture.find(labels.numpy().tobytes()), "labels in clear"
    assert not loopback_capture.find(b"val_auc") and not loopback_capture.find(b"0.987654321"), "metrics in clear"
    assert not loopback_capture.find(SECRET), "the secret in clear"
    header = encode(Header(1, "a->s", Kind.GRADIENT, "server", "site-a", "train", torch.float32, (256, 1024)), NAMES)
    assert not loopback_capture.find(header.numpy().tobytes()[:64]), "tensor headers in clear"
