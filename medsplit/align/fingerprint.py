"""Keyed fingerprints of a batch's row IDs, compared across vertical sites so that batch k is the same patients."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence

from ..errors import ProtocolError

__all__ = ["batch_fingerprint", "check_fingerprints"]


def batch_fingerprint(row_ids: Sequence[str], key: bytes) -> str:
    """HMAC-SHA256 over the ordered IDs of a batch (length-prefixed, so no two lists collide), hex.

    The key must be shared by the data sites only: a party holding the key could test guessed IDs.
    """
    mac = hmac.new(key, b"medsplit-batch-v1", hashlib.sha256)
    for rid in row_ids:
        b = str(rid).encode("utf-8")
        mac.update(struct.pack(">I", len(b)) + b)
    return mac.hexdigest()


def check_fingerprints(fingerprints: Mapping[str, str], *, step: int | None = None) -> None:
    """Raise ``ProtocolError`` naming the sites whose batch differs from the majority."""
    if len(set(fingerprints.values())) <= 1:
        return
    counts: dict[str, int] = {}
    for fp in fingerprints.values():
        counts[fp] = counts.get(fp, 0) + 1
    majority = max(counts, key=lambda fp: (counts[fp], fp))
    odd = sorted(site for site, fp in fingerprints.items() if fp != majority)
    at = f" at step {step}" if step is not None else ""
    raise ProtocolError(f"batch row IDs differ across sites{at}: {', '.join(odd)} disagree with "
                        f"{', '.join(sorted(s for s in fingerprints if s not in odd))}",
                        hint="the sites are not iterating the agreed order in the same way; re-run the alignment "
                             "and check that every site uses the same batch size, split seed and shuffling seed")
