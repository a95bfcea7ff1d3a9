"""What crosses a party boundary: typed messages, the Wire that checks them, codecs, the meter and the audit log."""

from .audit import AuditLog, render_audit, summarise_audit
from .codecs import CODECS, CodecChain, codec_chain, edge_codecs
from .message import PHASES, Expect, Kind, Message, Packed
from .meter import Meter, TransferRecord
from .wire import Wire

__all__ = ["PHASES", "Expect", "Kind", "Message", "Packed", "Meter", "TransferRecord", "Wire", "AuditLog",
           "render_audit", "summarise_audit", "CODECS", "CodecChain", "codec_chain", "edge_codecs"]
