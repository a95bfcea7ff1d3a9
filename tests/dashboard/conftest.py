"""Dashboard fixtures: run stores written once per session by the engine, and the app under AppTest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import launcher
from medsplit.runstore import RunStore
from sites.cli import main
from tests.dashboard.helpers import wait_until

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
TIMEOUT = 60  # seconds for one AppTest script run (the first imports torch)


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """Two finished runs written by `medsplit demo --run-dir` (in-memory data): vanilla, and vertical with NoPeek."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--transport", "local", "--data", "memory", "--epochs", "2", "--patients", "60", "--quiet"]
    assert main(["demo", "--preset", "vanilla", "--run-dir", str(root / "vanilla"), *common]) == 0
    assert main(["demo", "--preset", "vertical", "--nopeek", "0.5", "--run-dir", str(root / "vertical"),
                 *common]) == 0
    return root


def make_app(root: Path, monkeypatch, **query: str) -> AppTest:
    """The app on the runs folder ``root``, which is also its root (as `medsplit dashboard --runs ROOT` runs it)."""
    monkeypatch.setenv("MEDSPLIT_RUNS", str(root))
    monkeypatch.delenv("MEDSPLIT_ROOT", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    return at


@pytest.fixture
def app(runs_root, monkeypatch):
    """An AppTest factory on the session's runs folder: ``app(page="progress", run="vanilla")``."""
    return lambda **query: make_app(runs_root, monkeypatch, **query)


@pytest.fixture(scope="session")
def launched(tmp_path_factory) -> dict:
    """A run started from the Launch section (synthetic files, 1 epoch, each party its own process on 127.0.0.1),
    followed until its job exits; what the page showed right after Start is kept."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("launched")
    try:
        at = make_app(root, mp, page="topology")
        at.run()
        at.selectbox(key="t_preset").set_value("vertical").run()
        at.text_input(key="t_epochs").set_value("1").run()
        at.sidebar.radio[0].set_value("Launch").run()
        at.text_input(key="l_name").set_value("from-page")
        at.number_input(key="l_patients").set_value(40)
        at.radio(key="l_transport").set_value("local processes (gloo on 127.0.0.1)")
        at.button(key="b_start").click().run()
        run_dir = root / "from-page"
        assert not at.exception, at.exception
        assert (run_dir / "run.sqlite").exists(), [e.value for e in at.error]
        right_after = {"markdown": [m.value for m in at.markdown], "success": [s.value for s in at.success],
                       "status": RunStore(run_dir, readonly=True).info()["status"]}
        wait_until(lambda: not launcher.launch_state(run_dir)["alive"], 240, "the launched run to finish")
        at.run()
    finally:
        mp.undo()
    return {"root": root, "run_dir": run_dir, "app": at, "right_after": right_after}


@pytest.fixture
def app_in(monkeypatch):
    """An AppTest factory on any runs folder: ``app_in(root, page="launch")``."""
    return lambda root, **query: make_app(root, monkeypatch, **query)


@pytest.fixture
def new_store():
    """A factory of hand-written live run stores (``new_store(run_dir)``), closed after the test."""
    stores = []
    yield lambda run_dir: stores.append(_store(run_dir)) or stores[-1]
    for store in stores:
        store.close()


def _store(run_dir: Path) -> RunStore:
    store = RunStore(run_dir)
    store.set_info(name=run_dir.name, preset="vanilla", transport="local", status="running", started=time.time() - 5,
                   epochs=3, seed=0, nopeek=0.0, parties=["hospital", "server"],
                   topology="topology 'vanilla'\n  [site] hospital: hospital.encoder\n  [server] server: server.head")
    return store
