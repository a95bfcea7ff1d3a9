"""Channel security between parties: identities, the pair handshake, and sealed frames."""

from .channel import KEY_BYTES, TAG, Channel
from .handshake import FRAME, PROTOCOL, PairContext, handshake
from .keys import Identity, PeerTrust, Trust, fingerprint, load_public_key, new_pair_key, public_key_pem

__all__ = ["Channel", "TAG", "KEY_BYTES", "FRAME", "PROTOCOL", "PairContext", "handshake", "Identity", "PeerTrust",
           "Trust", "fingerprint", "load_public_key", "new_pair_key", "public_key_pem"]
