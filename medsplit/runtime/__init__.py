"""Parties as processes: nodes, sessions, admission, resume, checkpoints and the control plane."""

from typing import Any

from .host import run_host
from .member import run_member
from .node import Node, NodeOptions, host_party

__all__ = ["Node", "NodeOptions", "host_party", "run_node"]


def run_node(opts: NodeOptions) -> dict[str, Any] | None:
    """Run one party until the run completes; returns the run summary on the host, None elsewhere."""
    node = Node(opts)
    if node.is_host:
        return run_host(node)
    run_member(node)
    return None
