"""`medsplit dashboard`: the streamlit command line it runs (localhost by default), and the root and runs folder
it confines the page to."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard import serve
from dashboard.settings import check_run_name, confined, places
from medsplit.errors import ConfigError
from sites.cli import build_parser


def test_streamlit_runs_the_app_headless_on_localhost(tmp_path):
    argv = serve.streamlit_argv(tmp_path / "runs", 8600)
    assert argv[1:5] == ["-m", "streamlit", "run", str(serve.APP)]
    options = dict(zip(argv[5:argv.index("--"):2], argv[6:argv.index("--"):2], strict=True))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8600"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"
    runs = str((tmp_path / "runs").resolve())
    assert argv[argv.index("--") + 1:] == ["--root", runs, "--runs", runs]  # the root defaults to the runs folder
    assert places(argv[argv.index("--") + 1:]).runs == (tmp_path / "runs").resolve()


def test_a_root_confines_the_runs_folder_and_every_path(tmp_path):
    argv = serve.streamlit_argv(None, 8600, root=tmp_path)
    assert argv[argv.index("--") + 1:] == ["--root", str(tmp_path), "--runs", str(tmp_path / "runs")]
    with pytest.raises(ConfigError, match="outside the dashboard's root"):
        serve.streamlit_argv(tmp_path / "elsewhere", 8600, root=tmp_path / "study")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "link").symlink_to(tmp_path)
    assert confined(tmp_path / "study", "a/b.yaml", "Load from") == tmp_path / "study" / "a" / "b.yaml"
    for bad in ("../x.yaml", "/etc/passwd", "link/x.yaml"):  # up, absolute, and out through a link
        with pytest.raises(ConfigError, match="outside the dashboard's root"):
            confined(tmp_path / "study", bad, "Load from")


def test_run_names_are_one_folder():
    assert check_run_name("vertical-study-20250101.1") == "vertical-study-20250101.1"
    for bad in ("../escape", "a/b", "..", ".x", "", "x" * 101):
        with pytest.raises(ConfigError, match="is not one folder name"):
            check_run_name(bad)


def test_the_cli_subcommand(monkeypatch, tmp_path):
    args = build_parser().parse_args(["dashboard", "--runs", "r", "--port", "8601", "--root", str(tmp_path)])
    assert (args.runs, args.port, args.host, args.root) == ("r", 8601, "127.0.0.1", str(tmp_path))
    seen = {}
    monkeypatch.setattr(serve.os, "execv", lambda path, argv: seen.update(argv=argv))
    serve.serve("r", 8601, root=tmp_path)
    assert seen["argv"] == serve.streamlit_argv("r", 8601, root=tmp_path)
    assert seen["argv"][-1] == str(tmp_path / "r")  # relative to the root
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"medsplit\[dashboard\]"):
        serve.serve("r", 8601)


def test_runs_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSPLIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MEDSPLIT_ROOT", raising=False)
    assert places([]).runs == places([]).root == (tmp_path / "runs").resolve()
    assert places(["--runs", str(tmp_path / "elsewhere")]).runs == (tmp_path / "elsewhere").resolve()
    monkeypatch.setenv("MEDSPLIT_ROOT", str(tmp_path))
    monkeypatch.delenv("MEDSPLIT_RUNS")
    assert places([]) == places(["--root", str(tmp_path)]) and places([]).runs == Path(tmp_path) / "runs"
