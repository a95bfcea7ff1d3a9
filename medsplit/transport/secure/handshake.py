"""The pair handshake: ephemeral X25519, each end proven by an Ed25519 signature and/or a shared secret, keys
derived with HKDF from a hash of the whole exchange. Framing-agnostic: it sends and receives fixed-size frames.

    initiator -> responder  HELLO   version, flags, ephemeral key e_i, identity key s_i, experiment digest
    responder -> initiator  PROOF   e_r, s_r, digest, sig_r, mac_r      (the responder proves itself first)
    initiator -> responder  PROOF   sig_i, mac_i
    responder -> initiator  VERDICT sealed under the new keys: accepted, or refused with the reason

    h0  = SHA-256(label, version, run, initiator name, responder name, pair generation)
    h1  = SHA-256(h0 | HELLO)       h2 = SHA-256(h1 | PROOF_r up to sig_r)
    keys, fin_i, fin_r = HKDF-SHA-256(ikm = X25519(e_i, e_r) | SHA-256(psk) if a psk, salt = h2)
    sig_r = Ed25519(s_r, "responder" | h2)   mac_r = HMAC(fin_r, h2 | sig_r)    h3 = SHA-256(h2 | sig_r | mac_r)
    sig_i = Ed25519(s_i, "initiator" | h3)   mac_i = HMAC(fin_i, h3 | sig_i)    channel id = SHA-256(h3 | PROOF_i)

A peer whose pinned key is known must sign; the MAC proves it holds the same key schedule (and so the same
shared secret). Nothing derived from a secret is sent before the sender's peer has proven itself, except the
responder's proof, which needs the initiator's ephemeral key only.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass

import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ...errors import AuthenticationError, ProtocolError, RefusedError
from .channel import KEY_BYTES, Channel
from .keys import PeerTrust, Trust, fingerprint, verify_signature

__all__ = ["PairContext", "handshake", "FRAME", "PROTOCOL"]

PROTOCOL = 1
FRAME = 256  # every handshake frame has this size, so a receiver posts a fixed buffer
_SIGNS = 1  # flag: this end signs with its identity key
_HELLO, _PROOF_R, _PROOF_I, _ABANDON = b"MSH1", b"MSH2", b"MSH3", b"MSHX"
_ZERO32, _ZERO64 = bytes(32), bytes(64)
_VERDICT = 128  # verdict plaintext bytes: status, then the reason as UTF-8, zero-padded


@dataclass(frozen=True)
class PairContext:
    """What both ends know before they speak; it goes into the transcript, so no field can be swapped."""

    run: str
    me: str
    peer: str
    initiator: bool
    generation: int
    digest: str  # this end's experiment digest

    def names(self) -> tuple[str, str]:
        return (self.me, self.peer) if self.initiator else (self.peer, self.me)


def _lp(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _frame(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return body + bytes(FRAME - len(body))


def _header(magic: bytes, flags: int) -> bytes:
    return magic + bytes([PROTOCOL, flags, 0, 0])


@dataclass
class _Schedule:
    material: bytes
    fin_i: bytes
    fin_r: bytes


def _derive(e: X25519PrivateKey, peer_e: bytes, psk: bytes | None, h2: bytes) -> _Schedule:
    try:
        shared = e.exchange(X25519PublicKey.from_public_bytes(peer_e))
    except ValueError:  # a low-order or malformed point: an honest peer never sends one
        raise AuthenticationError("the peer's ephemeral key is invalid") from None
    ikm = shared + (hashlib.sha256(b"medsplit psk" + psk).digest() if psk else b"")
    out = HKDF(hashes.SHA256(), KEY_BYTES + 64, salt=h2, info=b"medsplit pair keys v1").derive(ikm)
    return _Schedule(out[:KEY_BYTES], out[KEY_BYTES:KEY_BYTES + 32], out[KEY_BYTES + 32:])


def _check_proof(who: str, trust: PeerTrust, flags: int, static: bytes, sig: bytes, signed: bytes, mac: bytes,
                 expected_mac: bytes) -> str | None:
    """Why the peer's proof fails, or None. Every check runs; MACs are compared in constant time."""
    problems = []
    if not hmac.compare_digest(mac, expected_mac):
        problems.append("its key confirmation does not match (a different shared secret, or not the party)")
    if trust.public_key is not None:
        if not flags & _SIGNS or not hmac.compare_digest(static, trust.public_key):
            problems.append(f"it did not sign with the pinned key {fingerprint(trust.public_key)}")
        elif not verify_signature(trust.public_key, sig, signed):
            problems.append("its signature does not verify")
    return f"'{who}' could not prove who it is: " + "; ".join(problems) if problems else None


def handshake(send: Callable[[bytes], None], recv: Callable[[], bytes], ctx: PairContext, trust: Trust) -> Channel:
    """Runs one end of the handshake over ``send``/``recv`` (whole frames of ``FRAME`` bytes).

    Raises ``AuthenticationError`` when the peer cannot be authenticated or this end refuses it (the message
    says why; an honest peer may try again), ``RefusedError`` when the authenticated peer refused this end,
    and ``ProtocolError`` for a frame that is not a handshake frame at all.
    """
    peer_trust = trust.peer(ctx.peer)
    if ctx.peer in trust.revoked:
        raise AuthenticationError(f"party '{ctx.me}' refuses '{ctx.peer}': the study revoked its identity",
                                  hint="a revoked party needs a new identity from the study's coordinator")
    if peer_trust is None:
        raise AuthenticationError(f"party '{ctx.me}' has no key or secret for '{ctx.peer}', so it cannot tell "
                                  f"'{ctx.peer}' from an impostor", hint="provision the study's identities "
                                  "(`medsplit provision`) or give both parties the same secret")
    ident = trust.identity
    flags = _SIGNS if ident is not None else 0
    static = ident.public if ident is not None else _ZERO32
    digest = hashlib.sha256(ctx.digest.encode()).digest()
    ini, res = ctx.names()
    h0 = _h(b"medsplit pair handshake\0", struct.pack(">I", PROTOCOL), _lp(ctx.run.encode()), _lp(ini.encode()),
            _lp(res.encode()), struct.pack(">Q", ctx.generation))
    e = X25519PrivateKey.generate()
    if ctx.initiator:
        hello = _frame(_header(_HELLO, flags), _raw(e.public_key()), static, digest)
        send(hello)
        proof_r = _expect(recv(), _PROOF_R, ctx.peer)
        p_flags, p_e, p_static, p_digest = proof_r[5], proof_r[8:40], proof_r[40:72], proof_r[72:104]
        sig_r, mac_r = proof_r[104:168], proof_r[168:200]
        h2 = _h(_h(h0, hello), proof_r[:104])
        keys = _derive(e, p_e, peer_trust.psk, h2)
        problem = _check_proof(ctx.peer, peer_trust, p_flags, p_static, sig_r, b"responder\0" + h2, mac_r,
                               hmac.new(keys.fin_r, h2 + sig_r, "sha256").digest())
        if problem:  # say nothing derived from our secret to a peer that did not prove itself; just leave
            send(_frame(_header(_ABANDON, flags)))
            raise AuthenticationError(f"party '{ctx.me}' refused the connection: {problem}",
                                      hint=f"check that '{ctx.peer}' is the real one: its pinned key or the shared "
                                           "secret must match this party's configuration")
        h3 = _h(h2, sig_r, mac_r)
        sig_i = ident.sign(b"initiator\0" + h3) if ident is not None else _ZERO64
        proof_i = _frame(_header(_PROOF_I, flags), sig_i, hmac.new(keys.fin_i, h3 + sig_i, "sha256").digest())
        send(proof_i)
        channel = Channel(keys.material, initiator=True, channel_id=_h(h3, proof_i)[:16], peer=ctx.peer)
        verdict = _open_verdict(channel, recv())
        if verdict is not None:
            raise RefusedError(f"'{ctx.peer}' refused party '{ctx.me}': {verdict}",
                               hint="use the same experiment file and the credentials provisioned for this party")
        if p_digest != digest:  # the responder checks this too and refuses; this is belt and braces
            raise RefusedError(f"'{ctx.peer}' runs another experiment than party '{ctx.me}'")
        return channel
    hello = _expect(recv(), _HELLO, ctx.peer)
    p_flags, p_e, p_static, p_digest = hello[5], hello[8:40], hello[40:72], hello[72:104]
    head = _header(_PROOF_R, flags) + _raw(e.public_key()) + static + digest
    h2 = _h(_h(h0, hello), head)
    keys = _derive(e, p_e, peer_trust.psk, h2)
    sig_r = ident.sign(b"responder\0" + h2) if ident is not None else _ZERO64
    mac_r = hmac.new(keys.fin_r, h2 + sig_r, "sha256").digest()
    send(_frame(head, sig_r, mac_r))
    h3 = _h(h2, sig_r, mac_r)
    frame = recv()
    if frame[:4] == _ABANDON:  # unauthenticated: it ends this attempt, as a closed connection would
        raise AuthenticationError(f"'{ctx.peer}' could not authenticate party '{ctx.me}' and left the handshake "
                                  f"(a different shared secret or server key at one end, or not '{ctx.peer}')",
                                  hint=f"check the credentials this party holds for '{ctx.peer}' against its own")
    proof_i = _expect(frame, _PROOF_I, ctx.peer)
    sig_i, mac_i = proof_i[8:72], proof_i[72:104]
    channel = Channel(keys.material, initiator=False, channel_id=_h(h3, proof_i)[:16], peer=ctx.peer)
    problem = _check_proof(ctx.peer, peer_trust, p_flags, p_static, sig_i, b"initiator\0" + h3, mac_i,
                           hmac.new(keys.fin_i, h3 + sig_i, "sha256").digest())
    if problem is None and p_digest != digest:
        problem = (f"'{ctx.peer}' runs another experiment (its file's digest differs from this party's "
                   f"{ctx.digest[:12]}...: topology, training or sites)")
    send(_seal_verdict(channel, problem))
    if problem:
        raise AuthenticationError(f"party '{ctx.me}' refused the connection: {problem}",
                                  hint=f"the operator of '{ctx.peer}' must use the study's experiment file and the "
                                       "credentials provisioned for that party")
    return channel


def _expect(frame: bytes, magic: bytes, peer: str) -> bytes:
    if len(frame) != FRAME or frame[:4] != magic:
        raise ProtocolError(f"'{peer}' did not answer with a medsplit handshake frame",
                            hint="the peer is not a medsplit party of this protocol version, or not the party")
    if frame[4] != PROTOCOL:
        raise ProtocolError(f"'{peer}' speaks handshake protocol {frame[4]}, this party {PROTOCOL}",
                            hint="run the same medsplit version at every party (no older protocol is accepted)")
    return frame


def _seal_verdict(channel: Channel, problem: str | None) -> bytes:
    text = (problem or "").encode()[:_VERDICT - 1]
    plain = bytes([1 if problem else 0]) + text + bytes(_VERDICT - 1 - len(text))
    return _frame(channel.seal(b"V", plain).numpy().tobytes())


def _open_verdict(channel: Channel, frame: bytes) -> str | None:
    sealed = torch.frombuffer(bytearray(frame[:_VERDICT + 16]), dtype=torch.uint8)
    plain = channel.open(b"V", sealed, what="the handshake verdict").numpy().tobytes()
    if plain[0] == 0:
        return None
    return plain[1:].rstrip(b"\0").decode("utf-8", "replace") or "refused"
