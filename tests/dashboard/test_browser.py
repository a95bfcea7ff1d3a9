"""End to end: `medsplit dashboard` (streamlit run --server.headless true) driven in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sites.launch import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium is not installed, so the dashboard cannot be driven in a browser: install Debian's "
                    "`chromium` package (`make test` does so where apt-get is available and permitted)")
    return path



@pytest.fixture
def dashboard(runs_root, tmp_path):
    """The dashboard as `medsplit dashboard` starts it, on a free localhost port; stopped by its PID."""
    port = free_port()
    with open(tmp_path / "streamlit.log", "wb") as log:  # the child keeps its own handle
        proc = subprocess.Popen([sys.executable, "-m", "sites.cli", "dashboard", "--runs", str(runs_root),
                                 "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the dashboard did not start:\n" + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the group is streamlit and nothing else of ours
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_progress_chart_renders_in_chromium(dashboard, tmp_path):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.set_default_timeout(45_000)
            page.goto(dashboard)
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Progress", exact=True).click()
            page.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="vertical", exact=True).click()
            page.get_by_text("Distance correlation of each cut with its raw input (NoPeek α = 0.5)").wait_for()
            chart = page.locator('[data-testid="stVegaLiteChart"]').first
            line = chart.locator("path[aria-roledescription='line mark']").first
            line.wait_for(state="visible")
            box = chart.bounding_box()
            assert box and box["width"] > 200 and box["height"] > 150
            assert len(line.get_attribute("d") or "") > 10  # a drawn curve, not an empty chart
            assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 5
            assert page.locator('[data-testid="stException"]').count() == 0
            page.wait_for_timeout(500)  # let the last charts finish their transitions
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
