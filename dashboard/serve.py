"""`medsplit dashboard`: run `streamlit run dashboard/app.py` on localhost with the runs folder and safe options."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from medsplit.errors import ConfigError

__all__ = ["APP", "streamlit_argv", "serve", "add_dashboard_command"]

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_argv(runs: str | os.PathLike = "runs", port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The streamlit command line: headless, no usage statistics, listening on ``host`` only."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
            "--server.address", host, "--server.port", str(port), "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
            "--", "--runs", str(Path(runs).expanduser().resolve())]


def serve(runs: str | os.PathLike = "runs", port: int = 8501, host: str = "127.0.0.1") -> int:
    """Replace this process with streamlit (so that its PID is the dashboard's); returns only on failure."""
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the dashboard needs streamlit, which is not installed",
                          hint="pip install 'medsplit[dashboard]'")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"medsplit dashboard: listening on {host}: anyone who can reach it sees the runs' metrics",
              file=sys.stderr)
    argv = streamlit_argv(runs, port, host)
    print(f"medsplit dashboard: http://{host}:{port}  (runs: {argv[-1]})", flush=True)
    os.execv(argv[0], argv)
    return 1  # pragma: no cover - execv does not return


def _dashboard(args: argparse.Namespace) -> int:
    return serve(args.runs, args.port, args.host)


def add_dashboard_command(sub: Any) -> None:
    """Register `medsplit dashboard` on the CLI's subparsers."""
    p = sub.add_parser("dashboard", help="open the web dashboard (configure, launch and watch runs; no data shown)",
                       description="Start the Streamlit dashboard on this machine. It reads run stores (metrics, "
                                   "bytes, node status) and never shows images, per-patient rows or patient IDs.")
    p.add_argument("--runs", default="runs", metavar="DIR", help="folder of run directories (default: runs)")
    p.add_argument("--port", type=int, default=8501, metavar="P", help="port (default: 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.set_defaults(func=_dashboard)
