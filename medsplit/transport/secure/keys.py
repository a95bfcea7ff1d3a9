"""Who a party is (its Ed25519 identity) and what it requires of each peer (a pinned public key, a shared secret)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ...errors import ConfigError

__all__ = ["Identity", "PeerTrust", "Trust", "fingerprint", "load_public_key", "public_key_pem", "verify_signature"]


def fingerprint(public: bytes) -> str:
    """A short, readable digest of a public key for people to compare (``SHA256:ab12cd34...``, 32 hex digits)."""
    return "SHA256:" + hashlib.sha256(public).hexdigest()[:32]


def public_key_pem(public: bytes) -> bytes:
    return Ed25519PublicKey.from_public_bytes(public).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: str | os.PathLike[str], *, what: str = "public key") -> bytes:
    """The raw 32 bytes of an Ed25519 public key in a PEM file."""
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}",
                          hint="give the path of the .pub file `medsplit provision` wrote") from exc
    except ValueError as exc:
        raise ConfigError(f"{what}: {path} is not a PEM public key",
                          hint="use a .pub file from `medsplit provision`") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{what}: {path} holds a {type(key).__name__}, not an Ed25519 key",
                          hint="medsplit identities are Ed25519 keys: `medsplit provision` writes them")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_signature(public: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
        return True
    except (InvalidSignature, ValueError):
        return False


class Identity:
    """This party's long-term Ed25519 key: it signs its side of every pair handshake."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public: bytes = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        path = Path(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise ConfigError(f"private key: cannot read {path}: {exc.strerror}",
                              hint="give the path of the .key file `medsplit provision` wrote for this party") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"private key: {path} is not an unencrypted PEM private key",
                              hint="use the .key file from `medsplit provision`") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"private key: {path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def pem(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def __repr__(self) -> str:  # never the key itself
        return f"Identity({self.fingerprint})"


@dataclass(frozen=True)
class PeerTrust:
    """What this party requires of one peer: a signature by ``public_key``, knowledge of ``psk``, or both."""

    public_key: bytes | None = None
    psk: bytes | None = field(default=None, repr=False)

    def describe(self) -> str:
        parts = ([f"Ed25519 key {fingerprint(self.public_key)}"] if self.public_key else []) + (
            ["shared secret"] if self.psk else [])
        return " and ".join(parts) or "nothing"


class Trust:
    """A party's credentials for its pairs: its own identity (optional) and what it requires of each peer.

    A peer with no entry is unknown and refused. Entries can be added later: the host introduces parties
    that talk to each other directly by handing both a fresh pair key over their authenticated channels.
    """

    def __init__(self, identity: Identity | None = None, peers: Mapping[str, PeerTrust] | None = None,
                 revoked: Iterable[str] = ()) -> None:
        self.identity = identity
        self.peers: dict[str, PeerTrust] = dict(peers or {})
        self.revoked = frozenset(revoked)  # parties whose identity the study revoked: refused whatever they hold

    @classmethod
    def shared(cls, secret: bytes, peers: Iterable[str], identity: Identity | None = None) -> Trust:
        """One secret for every peer (tests, benchmarks, one party's own processes)."""
        return cls(identity, {p: PeerTrust(psk=secret) for p in peers})

    @classmethod
    def ephemeral(cls, parties: Iterable[str]) -> dict[str, Trust]:
        """Fresh identities for parties that all run here: each knows every other's public key."""
        ids = {p: Identity.generate() for p in parties}
        return {p: cls(ids[p], {q: PeerTrust(public_key=ids[q].public) for q in ids if q != p}) for p in ids}

    def peer(self, name: str) -> PeerTrust | None:
        if name in self.revoked:
            return None
        entry = self.peers.get(name)
        return entry if entry is not None and (entry.public_key or entry.psk) else None

    def introduce(self, name: str, psk: bytes) -> None:
        """Adds a pair key handed over by the host (kept with the peer's pinned key, if any)."""
        known = self.peers.get(name) or PeerTrust()
        self.peers[name] = PeerTrust(public_key=known.public_key, psk=psk)


def new_pair_key() -> bytes:
    return secrets.token_bytes(32)
