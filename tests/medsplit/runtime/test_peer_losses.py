"""What the host takes from a peer's shared loss (U-shaped: the labels' site reports it) into its progress lines and
the run store: finite numbers for the plan's own tasks, nothing else a peer may put in the value."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from medsplit.runtime.session import NodeHooks


class _Control:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, peer: str, *key: Any) -> Any:
        assert key == (7, "loss")  # this session's key
        return self.values.get(peer)


def _losses(values: dict[str, Any]) -> dict[str, float]:
    node = SimpleNamespace(me="server", active=["server", *values], session=7, control=_Control(values),
                           plan=SimpleNamespace(tasks={"diagnosis": None, "mortality": None}))
    return NodeHooks(node, None)._peer_losses()  # type: ignore[arg-type]


def test_a_peers_losses_for_the_plans_tasks_are_taken():
    assert _losses({"ehr": {"diagnosis": 0.5}, "imaging": {"mortality": 1}}) == {"diagnosis": 0.5, "mortality": 1.0}


def test_anything_else_a_peer_sends_is_dropped():
    forged = {"diagnosis": float("nan"), "mortality": float("inf"), "<script>": 0.1, "x" * 10_000: 1.0}
    assert _losses({"ehr": forged, "imaging": {"diagnosis": True, "mortality": "0.3"}, "relay": [1, 2]}) == {}
