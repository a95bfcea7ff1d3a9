"""Checkpoints of one party: its segments, optimizer and place in the schedule, saved atomically, loaded safely.

Files are written to a temporary name and renamed (a crash never leaves half a checkpoint) and loaded
with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_steps", "KEEP"]

KEEP = 3  # checkpoints kept per party; parties resume from the newest step they all have
_NAME = re.compile(r"^step-(\d{9})\.pt$")


def _path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.pt"


def save_checkpoint(directory: str | os.PathLike[str], step: int, state: dict[str, Any],
                    keep: AbstractSet[int] = frozenset()) -> Path:
    """Write ``state`` for ``step``; of the older ones, keep the newest KEEP and the steps in ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = _path(directory, step)
    tmp = final.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    for old in checkpoint_steps(directory)[:-KEEP]:
        if old not in keep:
            _path(directory, old).unlink(missing_ok=True)
    return final


def checkpoint_steps(directory: str | os.PathLike[str]) -> list[int]:
    """Steps with a complete checkpoint, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))


def load_checkpoint(directory: str | os.PathLike[str], step: int) -> dict[str, Any]:
    path = _path(Path(directory), step)
    try:
        state: dict[str, Any] = torch.load(path, weights_only=True)
        return state
    except FileNotFoundError:
        raise DataError(f"no checkpoint for step {step} in {directory}",
                            hint=f"available: {checkpoint_steps(directory)}") from None
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"checkpoint {path} cannot be loaded safely: {exc}",
                            hint="delete it; the party resumes from an older one") from exc
