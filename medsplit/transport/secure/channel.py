"""One pair's sealed traffic: AES-256-GCM per direction, counter nonces checked in order, associated data per frame."""

from __future__ import annotations

import threading

import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...errors import ProtocolError, TransportError

__all__ = ["Channel", "TAG", "KEY_BYTES"]

TAG = 16  # bytes of GCM tag after every sealed frame
KEY_BYTES = 2 * 32 + 2 * 12  # a key and an IV per direction
# A counter past this ends the connection instead of wrapping (a nonce is never used twice under one key);
# far beyond any run: 2^62 frames.
_LAST = (1 << 62) - 1


def _view(t: torch.Tensor) -> memoryview:
    return memoryview(t.numpy()).cast("B")  # type: ignore[arg-type]  # numpy arrays are buffers


class _Direction:
    def __init__(self, key: bytes, iv: bytes, label: bytes) -> None:
        self.aead = AESGCM(key)
        self.iv = int.from_bytes(iv, "big")
        self.label = label
        self.counter = 0

    def next_nonce(self) -> tuple[bytes, int]:
        n = self.counter
        if n > _LAST:
            raise TransportError("the connection's frame counter is used up; reconnect for fresh keys")
        self.counter += 1
        return (self.iv ^ n).to_bytes(12, "big"), n


class Channel:
    """Seals what this end sends and opens what it receives, in order.

    Every frame's nonce is the direction's IV xor its counter: the receiver does not read a counter from the
    wire, it uses the next one it expects, so a replayed, dropped or reordered frame does not verify. The
    associated data binds the channel (a hash of its handshake), the direction, the frame's purpose, the
    counter, and what the caller adds (a payload is bound to its header). Nothing is parsed before it verifies.
    """

    def __init__(self, material: bytes, *, initiator: bool, channel_id: bytes, peer: str) -> None:
        if len(material) != KEY_BYTES:
            raise ValueError("channel key material has the wrong length")
        k_i, k_r, iv_i, iv_r = material[:32], material[32:64], material[64:76], material[76:88]
        forward, backward = _Direction(k_i, iv_i, b"i>r"), _Direction(k_r, iv_r, b"r>i")
        self._out, self._in = (forward, backward) if initiator else (backward, forward)
        self.id = channel_id
        self.peer = peer
        self._lock = threading.Lock()  # senders seal in the order they post

    def _ad(self, d: _Direction, purpose: bytes, counter: int, extra: bytes) -> bytes:
        return self.id + d.label + purpose + counter.to_bytes(8, "big") + extra

    def seal(self, purpose: bytes, data: torch.Tensor | bytes, extra: bytes = b"") -> torch.Tensor:
        """``data`` (a uint8 tensor or bytes) sealed into a new uint8 tensor of ``len + TAG`` bytes."""
        src = _view(data) if isinstance(data, torch.Tensor) else memoryview(data)
        out = torch.empty(len(src) + TAG, dtype=torch.uint8)
        with self._lock:
            nonce, n = self._out.next_nonce()
            self._out.aead.encrypt_into(nonce, src, self._ad(self._out, purpose, n, extra), _view(out))
        return out

    def open(self, purpose: bytes, sealed: torch.Tensor, extra: bytes = b"", *, what: str = "a frame") -> torch.Tensor:
        """The plaintext of the next frame from the peer (uint8), or ProtocolError when it does not verify.

        Called by one receiver thread only. A frame that fails leaves the channel unusable: the pair is closed.
        """
        if sealed.numel() < TAG:
            raise self._bad(what, "it is shorter than its tag")
        nonce, n = self._in.next_nonce()
        out = torch.empty(sealed.numel() - TAG, dtype=torch.uint8)
        try:
            self._in.aead.decrypt_into(nonce, _view(sealed), self._ad(self._in, purpose, n, extra), _view(out))
        except InvalidTag:
            raise self._bad(what, "it does not verify") from None
        return out

    def _bad(self, what: str, why: str) -> ProtocolError:
        # The same words for every cause (tampered, replayed, reordered, short, not from this peer): the
        # sender learns nothing about which check failed.
        return ProtocolError(f"{what} from '{self.peer}' was refused: {why} under this connection's keys "
                             "(tampered, replayed, truncated, or not sent by that peer)",
                             hint="the connection is closed; an honest peer reconnects with fresh keys")
