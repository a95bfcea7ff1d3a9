"""What crosses a party boundary: typed messages, the Wire that checks them, the meter and the audit log."""

from .audit import AuditLog, render_audit, summarise_audit
from .message import PHASES, Expect, Kind, Message
from .meter import Meter, TransferRecord
from .wire import Wire

__all__ = ["PHASES", "Expect", "Kind", "Message", "Meter", "TransferRecord", "Wire", "AuditLog", "render_audit",
           "summarise_audit"]
