"""Vertical sites agree on their common patients (private set intersection) and prove each batch is the same."""

from .channel import align_in_process, psi_channel, psi_edges, psi_leader
from .fingerprint import batch_fingerprint, check_fingerprints
from .psi import agreed_order, align_follower, align_leader, order_key, psi_intersect

__all__ = ["align_in_process", "psi_channel", "psi_edges", "psi_leader", "batch_fingerprint", "check_fingerprints",
           "agreed_order", "align_follower", "align_leader", "order_key", "psi_intersect"]
