"""Tensors between processes over torch.distributed gloo: one 2-rank group per pair of parties."""

from .transport import GlooTransport

__all__ = ["GlooTransport"]
