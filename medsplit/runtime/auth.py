"""Proving a node is a listed site: a challenge answered with an HMAC (shared secret) or an Ed25519 signature.

No tensor is exchanged with a node before it has answered a fresh challenge; the pair's rendezvous name
is derived from the answer, so a party without the credentials cannot even join the tensor channel.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["Credentials", "challenge_message", "answer", "verify", "channel_token"]


@dataclass(frozen=True)
class Credentials:
    """What a site holds (a secret or a private key) or what the server knows of it (a secret or a public key)."""

    secret: bytes | None = None
    private_key: Path | None = None
    public_key: Path | None = None

    def describe(self) -> str:
        return "shared secret" if self.secret else "Ed25519 key" if (self.private_key or self.public_key) else "none"


def challenge_message(run: str, site: str, nonce: bytes) -> bytes:
    return b"medsplit-auth-v1|" + run.encode() + b"|" + site.encode() + b"|" + nonce


def answer(creds: Credentials, run: str, site: str, nonce: bytes) -> bytes:
    """The site's answer to the server's challenge."""
    msg = challenge_message(run, site, nonce)
    if creds.secret:
        return hmac.new(creds.secret, msg, hashlib.sha256).digest()
    if creds.private_key:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(creds.private_key.read_bytes(), password=None)
        return key.sign(msg)
    raise ConfigError(f"site '{site}' has no credentials to answer the server's challenge",
                      hint="set node.secret_env, node.secret_file or node.private_key in the site YAML")


def verify(creds: Credentials, run: str, site: str, nonce: bytes, response: bytes) -> bool:
    """The server's check of a site's answer (constant time for secrets)."""
    msg = challenge_message(run, site, nonce)
    if creds.secret:
        return hmac.compare_digest(hmac.new(creds.secret, msg, hashlib.sha256).digest(), response)
    if creds.public_key:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            load_pem_public_key(creds.public_key.read_bytes()).verify(response, msg)
            return True
        except InvalidSignature:
            return False
    return False


def channel_token(response: bytes, nonce: bytes) -> str:
    """A name only the server and the authenticated site can compute, for their tensor channel's rendezvous."""
    return hashlib.sha256(b"medsplit-channel|" + nonce + response).hexdigest()[:24]
