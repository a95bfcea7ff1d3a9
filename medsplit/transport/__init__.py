"""Transports: how messages move between parties. One registry (``TRANSPORTS``) names them all."""

from .base import NetworkTransport, Transport
from .group import PartyGroup
from .header import Header, NameTable
from .local import LocalTransport
from .mock import MockTransport
from .registry import TRANSPORTS, TransportSpec, in_process_transport, node_transport, transport_names, transport_spec

__all__ = ["Transport", "NetworkTransport", "PartyGroup", "LocalTransport", "MockTransport", "NameTable", "Header",
           "TRANSPORTS", "TransportSpec", "transport_spec", "transport_names", "node_transport",
           "in_process_transport"]
