"""Transports: how messages move between parties. Pick one by name with ``make_transport``."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Transport
from .gloo import GlooTransport
from .header import Header, NameTable
from .local import LocalTransport
from .mock import MockTransport
from .rpc import RpcTransport

__all__ = ["Transport", "LocalTransport", "MockTransport", "GlooTransport", "RpcTransport", "NameTable", "Header",
           "make_transport", "TRANSPORTS"]

TRANSPORTS = ("local",)


def make_transport(name: str) -> Transport:
    """The in-process transport by name; the multi-process ones are created by their nodes."""
    if name == "local":
        return LocalTransport()
    raise ConfigError(f"unknown transport '{name}'", hint=f"choose one of: {', '.join(TRANSPORTS)}")
