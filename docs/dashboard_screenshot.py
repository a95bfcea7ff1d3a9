"""Retake docs/img/dashboard.png: a paced vertical study launched from the page in headless Chromium, and its
Progress section captured while it trains, after waiting for the step counter, the charts and the tables.

    .venv/bin/python docs/dashboard_screenshot.py [--out docs/img/dashboard.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard.designs import Designs  # noqa: E402
from dashboard.experiments import default_experiment  # noqa: E402
from tests.dashboard.helpers import metrics, start_dashboard, stop_dashboard  # noqa: E402


def _design() -> dict:
    """Two sites of the same patients: CT at one, an EHR table and the labels at the other (its encoder paced)."""
    data = default_experiment("vertical")
    data["experiment"] = "ct-ehr-study"
    data["training"] = {"epochs": 8, "batch_size": 4, "lr": 0.003}
    data["sites"][1]["modalities"]["ehr"]["encoder"] = {"kind": "module", "module": "tests.dashboard.pace:encoder"}
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="medsplit-shot-"))
    Designs(work / "runs").write("ct-ehr-study", _design())
    proc, url = start_dashboard(work, work / "streamlit.log", refresh=1.0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox",
                                                                                         "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.set_default_timeout(180_000)
            page.goto(f"{url}/?page=launch")
            page.get_by_role("heading", name="Launch").wait_for()
            page.get_by_text("runs the design on it as written").wait_for()
            box = page.get_by_label("Patients per site")
            box.fill("120")
            box.press("Enter")
            page.get_by_role("button", name="Start run").click()
            page.get_by_text("queued").first.wait_for()
            page.locator('[data-testid="stSidebar"]').get_by_text("Progress", exact=True).click()
            deadline = time.monotonic() + 300
            while not metrics(page).get("Epoch", "").startswith(("4 /", "5 /")):
                if time.monotonic() > deadline:
                    raise TimeoutError("the run did not reach its fourth epoch")
                time.sleep(0.5)
            for selector in ('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg',
                             '[data-testid="stDataFrame"]'):
                page.locator(selector).first.wait_for()
            page.wait_for_timeout(1500)  # the charts' last transitions
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
        print(f"wrote {args.out}")
    finally:
        for launch in (work / "runs").glob("*/launch.json"):  # the run this script started, by its recorded PID
            try:
                os.killpg(int(yaml.safe_load(launch.read_text())["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass
        stop_dashboard(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
