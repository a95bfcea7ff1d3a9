"""What the dashboard tests read off a rendered page (the graph, the YAML, the errors pinned to a field, the
metrics in a browser), and `medsplit dashboard` started on a free localhost port and stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from streamlit.testing.v1 import AppTest

from sites.launch import free_port

FAULT = "#c0392b"  # the colour of a faulty element in the graph (dashboard/graph.py)


def graph(at: AppTest) -> str:
    charts = at.get("graphviz_chart")
    assert len(charts) == 1, f"{len(charts)} graphs on the page"
    return charts[0].proto.spec


def shown_yaml(at: AppTest) -> dict:
    return yaml.safe_load(next(c.value for c in at.code if c.language == "yaml"))


def _trail(node: Any, key: str, trail: tuple = ()) -> tuple | None:
    for child in getattr(node, "children", {}).values():
        if getattr(child, "key", None) == key:
            return (*trail, node)
        found = _trail(child, key, (*trail, node))
        if found:
            return found
    return None


def _errors(node: Any) -> list[str]:
    out = [node.value] if getattr(node, "type", None) == "error" else []
    for child in getattr(node, "children", {}).values():
        out += _errors(child)
    return out


def pinned(at: AppTest, key: str) -> list[str]:
    """The errors shown beside the widget ``key``: in the smallest block (its column) that holds it."""
    trail = _trail(at._tree, key)
    assert trail, f"no widget '{key}' on the page"
    return _errors(trail[-1])


def widget_keys(at: AppTest) -> set[str]:
    keys: set[str] = set()

    def walk(node: Any) -> None:
        if getattr(node, "key", None):
            keys.add(node.key)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return keys


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s; fail after ``timeout`` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


ROOT = Path(__file__).resolve().parents[2]


def start_dashboard(root: Path, log: Path, refresh: float = 0.5, timeout: float = 90.0
                    ) -> tuple[subprocess.Popen, str]:
    """`medsplit dashboard --root ROOT` on a free localhost port, in its own session; returns once it is healthy."""
    port = free_port()
    with open(log, "wb") as out:  # the child keeps its own handle
        proc = subprocess.Popen([sys.executable, "-m", "sites.cli", "dashboard", "--root", str(root), "--port",
                                 str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "MEDSPLIT_REFRESH": str(refresh)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_dashboard(proc)
            raise AssertionError("the dashboard did not start:\n" + log.read_text())
        time.sleep(0.2)


def stop_dashboard(proc: subprocess.Popen) -> None:
    """SIGTERM to its session (streamlit and nothing else of ours), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def metrics(page: Any) -> dict[str, str]:
    """Every st.metric on a Playwright page: label -> value, as shown."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('[data-testid="stMetric"]')]
        .map(m => [m.querySelector('[data-testid="stMetricLabel"]').innerText.trim(),
                   m.querySelector('[data-testid="stMetricValue"]').innerText.trim()]))""")
