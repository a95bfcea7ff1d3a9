"""End to end in headless Chromium (Debian's, driven by Playwright): `medsplit dashboard --root DIR` walked as a
researcher would: design -> launch -> live steps in the first epoch -> stop -> stopped -> resume -> completed ->
compare, with no request leaving localhost."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from dashboard import launcher
from dashboard.settings import REFRESH_SECONDS
from medsplit.runstore import RunStore
from tests.dashboard.helpers import metrics, start_dashboard, stop_dashboard

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
WAIT = 120_000  # ms: one element on a loaded 2-core machine
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium is not installed, so the dashboard cannot be driven in a browser: install Debian's "
                    "`chromium` package (`make test` does so where apt-get is available and permitted)")
    return path


@pytest.fixture
def dashboard(tmp_path):
    """`medsplit dashboard --root DIR` on a free localhost port (live pages re-read every 0.5 s)."""
    root = tmp_path / "study"
    root.mkdir()
    proc, url = start_dashboard(root, tmp_path / "streamlit.log")
    try:
        yield url, root / "runs"
    finally:
        run = root / "runs" / "walk"
        if run.exists() and (launcher.launch_state(run) or {}).get("alive"):
            launcher.stop(run, grace=5, wait=True)
        stop_dashboard(proc)


def _section(page, name: str, heading: str) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=heading).wait_for()


def _type(page, label: str, value: str, nth: int = 0) -> None:
    """Type into a text input and commit it (Enter), as a user does."""
    box = page.get_by_label(label, exact=True).nth(nth)
    box.fill(value)
    box.press("Enter")


def _choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text(label, exact=True)).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def _yaml(page) -> str:
    return page.locator('[data-testid="stCode"]').filter(has_text="experiment:").first.inner_text()


T0 = time.monotonic()


def _until(what: str, check, timeout: float = 180.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            print(f"{time.monotonic() - T0:6.1f} s  {what}")  # the walk's timings, with -s
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.mark.timeout(900)  # a whole study's walk: three epochs, a stop and a resume, on two shared cores
def test_design_launch_watch_stop_resume_compare(dashboard, tmp_path):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    url, runs = dashboard
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.set_default_timeout(WAIT)
            page.on("request", lambda r: None if r.url.startswith(LOCAL) else outside.append(r.url))
            page.goto(url)
            page.get_by_role("heading", name="Topology").wait_for()

            # design: one site holding a table, with the study's own (paced) encoder; 3 epochs of batch 2
            _choose(page, "Preset", "vanilla")
            _until("the vanilla preset", lambda: "preset: vanilla" in _yaml(page))
            # each edit lands in the stored design before the next, as a user sees one change before making
            # another (an edit typed while the page redraws the last one may land on the old widget)
            for edit, shows in [(lambda: _choose(page, "Kind", "table"), "kind: table"),
                                (lambda: _type(page, "Data key", "ehr"), "ehr:"),
                                (lambda: _type(page, "Per-sample shape", "11"), "shape: [11]"),
                                (lambda: _choose(page, "Encoder", "module"), "kind: module"),
                                (lambda: _type(page, "Encoder module", "tests.dashboard.pace:encoder"),
                                 "tests.dashboard.pace:encoder"),
                                (lambda: _type(page, "Epochs", "3"), "epochs: 3"),
                                (lambda: _type(page, "Batch size", "2"), "batch_size: 2")]:
                edit()
                _until(f"the design to show {shows}", lambda shows=shows: shows in _yaml(page), timeout=60)
            _until("the design to hold every change", lambda: all(
                s in _yaml(page) for s in ("tests.dashboard.pace:encoder", "shape: [11]", "epochs: 3",
                                           "batch_size: 2")))
            page.get_by_text("Valid:").wait_for()
            page.locator('[data-testid="stGraphVizChart"] svg').first.wait_for()
            assert "ehr (11,)" in page.locator('[data-testid="stGraphVizChart"]').inner_text()

            # launch: returns at once, the run queued while its data is written
            _section(page, "Launch", "Launch")
            page.get_by_text("Launch writes synthetic files for this design as written").wait_for()
            _type(page, "Run name", "walk")
            box = page.get_by_label("Patients per site")
            box.fill("100")
            box.press("Enter")
            page.get_by_role("button", name="Start run").click()
            page.get_by_text("queued walk").wait_for(timeout=30_000)
            assert RunStore(runs / "walk", readonly=True).info()["status"] in ("queued", "running")

            # live progress: the step counter moves within the first epoch
            _section(page, "Progress", "Progress")
            seen: set[int] = set()

            def first_epoch_steps() -> bool:
                m = metrics(page)
                if m.get("Epoch", "").startswith("1 /") and re.fullmatch(r"\d+ / \d+", m.get("Step", "")):
                    seen.add(int(m["Step"].split(" / ")[0]))
                assert not m.get("Epoch", "1 /").startswith(("2 /", "3 /")) or len(seen) >= 2, \
                    f"the first epoch ended before its steps were seen moving: {sorted(seen)}"
                return len(seen) >= 2

            _until("the step counter to move within epoch 1", first_epoch_steps, timeout=240)
            assert page.get_by_text("Steps / s").count() and page.get_by_text("ETA").count()
            page.get_by_text("each transfer so far against the plan").wait_for()  # the table itself is a canvas

            # stop, once an epoch has ended (its checkpoint is what resuming needs)
            _until("the second epoch", lambda: metrics(page).get("Epoch", "").startswith("2 /"), timeout=240)
            _section(page, "Launch", "Launch")
            page.get_by_role("button", name="Stop run").click()
            page.get_by_text("Run status: stopped (stopped by SIGTERM").wait_for(timeout=60_000)
            info = RunStore(runs / "walk", readonly=True).info()
            assert info["status"] == "stopped" and info["ended"] > info["started"]
            _section(page, "Progress", "Progress")
            _until("Progress to show it stopped", lambda: metrics(page).get("Status", "").endswith("stopped"))
            page.get_by_text("stopped by SIGTERM").first.wait_for()

            # resume from its checkpoints, to the end
            _section(page, "Launch", "Launch")
            # the section switch's run has finished (its last element is drawn) before the click: a click during
            # that run can meet the Progress section's refresh timer, which Streamlit drops with the click
            page.get_by_text("Sites' data (counts only)").last.wait_for()
            time.sleep(REFRESH_SECONDS + 1)
            page.get_by_role("button", name="Resume run").click(timeout=90_000)
            try:
                _until("the run to be queued again", lambda: RunStore(runs / "walk", readonly=True).info()["status"]
                       in ("queued", "running", "completed"), timeout=60)
            except AssertionError:
                page.screenshot(path="/tmp/resume-fail.png", full_page=True)
                (Path("/tmp/resume-fail.txt")).write_text(page.inner_text("body"))
                raise
            page.get_by_text("Run status: completed").wait_for(timeout=300_000)
            info = RunStore(runs / "walk", readonly=True).info()
            assert info["status"] == "completed" and info["resumes"] == 1
            assert sorted({r["epoch"] for r in RunStore(runs / "walk", readonly=True).rows("metrics")}) == [1, 2, 3]

            # compare: the run, how it ended, its curve
            _section(page, "Compare", "Compare runs")
            page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
            page.locator('[data-testid="stDataFrame"]').first.wait_for()
            _section(page, "Progress", "Progress")
            page.locator("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg").first \
                .wait_for()
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "progress.png"))
        finally:
            browser.close()
    assert not outside, f"requests outside localhost: {outside}"
    assert (tmp_path / "progress.png").stat().st_size > 20_000
