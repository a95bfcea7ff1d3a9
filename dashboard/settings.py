"""Where the dashboard looks for run stores (`--runs DIR` after streamlit's `--`, or $MEDSPLIT_RUNS)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["runs_root", "REFRESH_SECONDS"]

REFRESH_SECONDS = 2.0  # how often a live run's pages re-read its run store


def runs_root(argv: Sequence[str] | None = None) -> Path:
    """The runs folder: `--runs DIR` (passed by `medsplit dashboard`), else $MEDSPLIT_RUNS, else ./runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs")
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return Path(args.runs or os.environ.get("MEDSPLIT_RUNS") or "runs").expanduser()
