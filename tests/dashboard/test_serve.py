"""`medsplit dashboard`: the streamlit command line it runs, localhost by default; the runs folder it passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard import serve
from dashboard.settings import runs_root
from sites.cli import build_parser
from medsplit.errors import ConfigError


def test_streamlit_runs_the_app_headless_on_localhost(tmp_path):
    argv = serve.streamlit_argv(tmp_path / "runs", 8600)
    assert argv[1:5] == ["-m", "streamlit", "run", str(serve.APP)]
    options = dict(zip(argv[5:argv.index("--"):2], argv[6:argv.index("--"):2]))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8600"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"
    assert argv[argv.index("--") + 1:] == ["--runs", str((tmp_path / "runs").resolve())]
    assert runs_root(argv[argv.index("--") + 1:]) == (tmp_path / "runs").resolve()


def test_the_cli_subcommand(monkeypatch):
    args = build_parser().parse_args(["dashboard", "--runs", "r", "--port", "8601"])
    assert (args.runs, args.port, args.host) == ("r", 8601, "127.0.0.1")
    seen = {}
    monkeypatch.setattr(serve.os, "execv", lambda path, argv: seen.update(argv=argv))
    serve.serve("r", 8601)
    assert seen["argv"] == serve.streamlit_argv("r", 8601)
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"medsplit\[dashboard\]"):
        serve.serve("r", 8601)


def test_runs_folder_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEDSPLIT_RUNS", "/srv/runs")
    assert runs_root([]) == Path("/srv/runs")
    assert runs_root(["--runs", "elsewhere"]) == Path("elsewhere")
