"""`medsplit dashboard`: run `streamlit run dashboard/app.py` on localhost with the runs folder and safe options."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from medsplit.errors import ConfigError

__all__ = ["APP", "streamlit_argv", "serve"]

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

