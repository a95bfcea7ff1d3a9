"""`medsplit dashboard`: run `streamlit run dashboard/app.py` on localhost, confined to a root, with safe options."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from medsplit.errors import ConfigError

from .settings import places

__all__ = ["APP", "streamlit_argv", "serve"]

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_argv(runs: str | os.PathLike | None = "runs", port: int = 8501, host: str = "127.0.0.1",
                   root: str | os.PathLike | None = None) -> list[str]:
    """The streamlit command line: headless, no usage statistics, listening on ``host`` only; the app gets
    the root and the runs folder (checked: the runs folder lies in the root) as absolute paths."""
    where = places([*(["--runs", str(runs)] if runs else []), *(["--root", str(root)] if root else [])])
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
            "--server.address", host, "--server.port", str(port), "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
            "--", "--root", str(where.root), "--runs", str(where.runs)]


def serve(runs: str | os.PathLike | None = "runs", port: int = 8501, host: str = "127.0.0.1",
          root: str | os.PathLike | None = None) -> int:
    """Replace this process with streamlit (so that its PID is the dashboard's); returns only on failure."""
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the dashboard needs streamlit, which is not installed",
                          hint="pip install 'medsplit[dashboard]'")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"medsplit dashboard: listening on {host}: anyone who can reach it sees the runs' metrics",
              file=sys.stderr)
    argv = streamlit_argv(runs, port, host, root)
    print(f"medsplit dashboard: http://{host}:{port}  (root: {argv[-3]}, runs: {argv[-1]})", flush=True)
    os.execv(argv[0], argv)
    return 1  # pragma: no cover - execv does not return
