"""How a topology runs: validation and compilation into a Plan, and the schedule of steps every party follows."""

from .compile import compile_topology
from .plan import Edge, LabelFlow, Op, Plan, PredictionFlow, WeightsFlow
from .schedule import Schedule, UnitSpec

__all__ = ["compile_topology", "Edge", "LabelFlow", "Op", "Plan", "PredictionFlow", "WeightsFlow", "Schedule",
           "UnitSpec"]
