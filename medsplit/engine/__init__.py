"""Running a plan: a party's runner, the one epoch loop, the in-process trainer, losses, metrics and reports."""

from .loop import EpochLoop, LoopHooks, Position
from .party import OptimizerFactory, PartyRunner, Unit, default_optimizer
from .report import EpochRecord, format_epoch, merge_reports, party_report, summarize
from .trainer import EXECUTORS, SplitTrainer

__all__ = ["EpochLoop", "LoopHooks", "Position", "OptimizerFactory", "PartyRunner", "Unit", "default_optimizer",
           "EpochRecord", "format_epoch", "merge_reports", "party_report", "summarize", "EXECUTORS", "SplitTrainer"]
