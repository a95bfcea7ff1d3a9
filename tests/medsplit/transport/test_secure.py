"""The pair handshake and sealed channel in one process, the two ends on threads: what an attacker can and cannot do."""

from __future__ import annotations

import queue
import threading

import pytest
import torch

from medsplit.errors import AuthenticationError, ProtocolError, RefusedError
from medsplit.transport.secure import FRAME, Identity, PairContext, PeerTrust, Trust, handshake

RUN = "study"


def _ends(ini_trust: Trust, res_trust: Trust, *, ini_digest="d1", res_digest="d1", ini_gen=0, res_gen=0,
          tamper=None):
    """Runs both ends over in-memory queues; returns (initiator result, responder result): a Channel or the error."""
    a_to_b: queue.Queue = queue.Queue()
    b_to_a: queue.Queue = queue.Queue()
    frames: list[bytes] = []

    def pipe(q: queue.Queue):
        def send(data: bytes) -> None:
            assert len(data) == FRAME
            frames.append(data)
            q.put(tamper(len(frames), data) if tamper else data)
        return send

    def recv(q: queue.Queue):
        def get() -> bytes:
            try:
                return q.get(timeout=5)
            except queue.Empty:
                raise AuthenticationError("the peer left during the handshake") from None
        return get

    out: dict[str, object] = {}

    def run(name, send, rcv, ctx, trust):
        try:
            out[name] = handshake(send, rcv, ctx, trust)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[name] = exc
            (b_to_a if name == "responder" else a_to_b).put(b"")  # wake the other end, as a closed socket would

    ti = threading.Thread(target=run, args=("initiator", pipe(a_to_b), recv(b_to_a),
                                            PairContext(RUN, "site", "server", True, ini_gen, ini_digest), ini_trust))
    tr = threading.Thread(target=run, args=("responder", pipe(b_to_a), recv(a_to_b),
                                            PairContext(RUN, "server", "site", False, res_gen, res_digest), res_trust))
    ti.start(), tr.start()
    ti.join(10), tr.join(10)
    return out["initiator"], out["responder"], frames


@pytest.fixture(scope="module")
def keys():
    return {"site": Identity.generate(), "server": Identity.generate(), "mallory": Identity.generate()}


def _pinned(keys, me, peer, secret=None):
    return Trust(keys[me], {peer: PeerTrust(public_key=keys[peer].public, psk=secret)})


def _roundtrip(a, b) -> None:
    x = torch.randn(3, 5)
    sealed = a.seal(b"P", x.view(torch.uint8).reshape(-1), extra=b"hdr")
    assert torch.equal(b.open(b"P", sealed, extra=b"hdr").view(torch.float32).reshape(3, 5), x)
    back = b.seal(b"P", torch.arange(7, dtype=torch.uint8))
    assert a.open(b"P", back).tolist() == list(range(7))


def test_pinned_keys_and_a_secret_give_a_channel_both_ways(keys):
    ini, res, frames = _ends(_pinned(keys, "site", "server", b"s"), _pinned(keys, "server", "site", b"s"))
    assert not isinstance(ini, Exception) and not isinstance(res, Exception), (ini, res)
    assert ini.id == res.id
    _roundtrip(ini, res)
    # Nothing secret crosses: no frame holds a private key.
    wire = b"".join(frames)
    for ident in keys.values():
        assert ident.pem()[30:60] not in wire


def test_a_shared_secret_alone_authenticates_both_ends():
    secret = b"a long shared secret"
    ini, res, _ = _ends(Trust.shared(secret, ["server"]), Trust.shared(secret, ["site"]))
    _roundtrip(ini, res)


def test_a_wrong_secret_is_refused_and_the_initiator_says_nothing_derived_from_its_own():
    ini, res, frames = _ends(Trust.shared(b"wrong", ["server"]), Trust.shared(b"right", ["site"]))
    assert isinstance(ini, AuthenticationError) and not isinstance(ini, RefusedError)
    assert "'server' could not prove who it is" in ini.message and "key confirmation" in ini.message
    assert isinstance(res, Exception)  # the initiator left: the responder got no proof and no channel
    # Hello, the responder's proof, and the initiator leaving: its last frame carries nothing but that it leaves.
    assert len(frames) == 3 and frames[2][:4] == b"MSHX" and not any(frames[2][8:])


def test_an_impostor_server_without_the_pinned_key_is_refused(keys):
    # mallory answers as the server: a valid handshake with its own key, not the pinned one.
    mallory = Trust(keys["mallory"], {"site": PeerTrust(public_key=keys["site"].public)})
    ini, _, _ = _ends(_pinned(keys, "site", "server"), mallory)
    assert isinstance(ini, AuthenticationError) and "did not sign with the pinned key" in ini.message


def test_an_impostor_site_is_refused_and_told_so_under_the_servers_keys(keys):
    ini, res, _ = _ends(Trust(keys["mallory"], {"server": PeerTrust(public_key=keys["server"].public)}),
                        _pinned(keys, "server", "site"))
    assert isinstance(res, AuthenticationError) and "'site' could not prove who it is" in res.message
    assert isinstance(ini, RefusedError) and "refused party 'site'" in ini.message


def test_another_experiment_is_refused_with_the_reason_at_both_ends(keys):
    ini, res, _ = _ends(_pinned(keys, "site", "server"), _pinned(keys, "server", "site"), ini_digest="other")
    assert isinstance(res, AuthenticationError) and "runs another experiment" in res.message
    assert isinstance(ini, RefusedError) and "runs another experiment" in ini.message


def test_an_unknown_or_revoked_party_is_refused(keys):
    _, res, _ = _ends(_pinned(keys, "site", "server"), Trust(keys["server"], {}))
    assert isinstance(res, AuthenticationError) and "has no key or secret for 'site'" in res.message
    _, res, _ = _ends(_pinned(keys, "site", "server"),
                      Trust(keys["server"], {"site": PeerTrust(public_key=keys["site"].public)}, revoked=["site"]))
    assert isinstance(res, AuthenticationError) and "revoked" in res.message


def test_the_transcript_binds_the_pair_generation():
    ini, res, _ = _ends(Trust.shared(b"k", ["server"]), Trust.shared(b"k", ["site"]), ini_gen=1, res_gen=2)
    assert isinstance(ini, AuthenticationError) and isinstance(res, Exception)


@pytest.mark.parametrize("which,byte", [(1, 20), (2, 50), (2, 120), (3, 10), (3, 80)])
def test_a_flipped_bit_in_any_handshake_frame_fails_it(keys, which, byte):
    def tamper(n, data):
        return data[:byte] + bytes([data[byte] ^ 1]) + data[byte + 1:] if n == which else data
    ini, res, _ = _ends(_pinned(keys, "site", "server", b"s"), _pinned(keys, "server", "site", b"s"), tamper=tamper)
    failed = (AuthenticationError, ProtocolError)
    assert isinstance(ini, failed) or isinstance(res, failed)
    assert not (hasattr(ini, "seal") and hasattr(res, "seal")), "a tampered handshake must not give both ends a channel"


def test_an_older_protocol_version_is_refused_not_downgraded(keys):
    def tamper(n, data):
        return data[:4] + bytes([0]) + data[5:] if n == 1 else data
    _, res, _ = _ends(_pinned(keys, "site", "server"), _pinned(keys, "server", "site"), tamper=tamper)
    assert isinstance(res, ProtocolError) and "speaks handshake protocol 0" in res.message


def test_replayed_reordered_tampered_and_short_frames_do_not_open():
    ini, res, _ = _ends(Trust.shared(b"k", ["server"]), Trust.shared(b"k", ["site"]))
    first = ini.seal(b"H", torch.arange(16, dtype=torch.uint8))
    second = ini.seal(b"H", torch.arange(16, dtype=torch.uint8))
    assert res.open(b"H", first).tolist() == list(range(16))
    with pytest.raises(ProtocolError, match="does not verify"):
        res.open(b"H", first)  # a replay: the receiver expects the next counter
    ini2, res2, _ = _ends(Trust.shared(b"k", ["server"]), Trust.shared(b"k", ["site"]))
    ini2.seal(b"H", torch.zeros(4, dtype=torch.uint8))
    b = ini2.seal(b"H", torch.ones(4, dtype=torch.uint8))
    with pytest.raises(ProtocolError):
        res2.open(b"H", b)  # reordered
    ini3, res3, _ = _ends(Trust.shared(b"k", ["server"]), Trust.shared(b"k", ["site"]))
    x = ini3.seal(b"P", torch.zeros(32, dtype=torch.uint8), extra=b"header: 2x4 float32")
    with pytest.raises(ProtocolError):
        res3.open(b"P", x[:24], extra=b"header: 2x4 float32")  # truncated
    ini4, res4, _ = _ends(Trust.shared(b"k", ["server"]), Trust.shared(b"k", ["site"]))
    y = ini4.seal(b"P", torch.zeros(32, dtype=torch.uint8), extra=b"shape (2, 4)")
    with pytest.raises(ProtocolError):
        res4.open(b"P", y, extra=b"shape (4, 2)")  # the payload is bound to its header
    ini5, res5, _ = _ends(Trust.shared(b"k", ["server"]), Trust.shared(b"k", ["site"]))
    z = ini5.seal(b"P", torch.zeros(32, dtype=torch.uint8))
    z[3] ^= 1
    with pytest.raises(ProtocolError, match="tampered, replayed, truncated, or not sent by that peer"):
        res5.open(b"P", z)
    assert second.numel() == 32


def test_a_recorded_handshake_replayed_to_the_server_is_refused(keys):
    # A sniffer recorded a whole handshake of the real site; it replays the site's frames to the server.
    _, _, frames = _ends(_pinned(keys, "site", "server", b"s"), _pinned(keys, "server", "site", b"s"))
    hello, proof = frames[0], frames[2]
    replay = iter([hello, proof])
    sent: list[bytes] = []
    ctx = PairContext(RUN, "server", "site", False, 0, "d1")
    with pytest.raises(AuthenticationError, match="'site' could not prove who it is"):
        handshake(sent.append, lambda: next(replay), ctx, _pinned(keys, "server", "site", b"s"))
    assert len(sent) == 2  # its proof (over a fresh ephemeral key), then the sealed refusal
