"""End-to-end: Playwright drives `streamlit run app.py` in Debian's headless chromium.

Opens every page, runs a registration, checks that the checkerboard and the Dice table
appear, and saves screenshots to test-artifacts/. Run: ``make test-browser`` or
``.venv/bin/python -m pytest tests/test_browser.py -m browser``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLOW_MS = 240_000  # generous: the CI machine may be shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium, or `make browser-deps`)")
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false",
                             "--server.fileWatcherType", "none"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"streamlit did not start; see {ARTIFACTS / 'streamlit.log'}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1500, "height": 1900})
        pg = ctx.new_page()
        pg.set_default_timeout(SLOW_MS)
        yield pg
        ctx.close()
        browser.close()


def _settle(page) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                           " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText"
                           ".includes('Running')", timeout=SLOW_MS)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=SLOW_MS)
    page.wait_for_timeout(800)


def _no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "a traceback reached the page"


def _goto_nav(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
    _settle(page)


def test_every_page_registration_checkerboard_and_dice(server, page):
    page.goto(server)
    page.get_by_text("Mean Dice").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    _settle(page)
    _no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "01_home.png"), full_page=True)

    _goto_nav(page, "Data")
    page.get_by_text("Current pair").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    _no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "02_data.png"), full_page=True)

    _goto_nav(page, "Learn")
    page.locator(".js-plotly-plot").first.wait_for()
    _no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "03_learn.png"), full_page=True)

    if page.locator('[data-testid="stSidebarNav"]').get_by_text("Train", exact=True).count():
        _goto_nav(page, "Train")
        _no_traceback(page)
        page.screenshot(path=str(ARTIFACTS / "04_train.png"), full_page=True)

    _goto_nav(page, "Register")
    page.get_by_role("button", name="Run registration").click()
    page.get_by_text("Saved as run").first.wait_for()
    _settle(page)
    _no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "05_register.png"), full_page=True)

    _goto_nav(page, "Evaluate & compare")
    page.get_by_text("After: fixed | warped").first.wait_for()   # checkerboard title (plotly SVG text)
    page.get_by_text("Dice per structure").first.wait_for()
    _settle(page)
    _no_traceback(page)
    assert page.locator('[data-testid="stDataFrame"]').count() >= 2, "comparison and Dice tables"
    page.screenshot(path=str(ARTIFACTS / "06_evaluate.png"), full_page=True)


def test_cancel_stops_a_running_registration(server, page):
    page.goto(server)
    page.get_by_text("Mean Dice").first.wait_for()
    _settle(page)
    _goto_nav(page, "Register")
    # SimpleITK B-spline takes seconds on a 2D pair and stops at its next iteration event when
    # cancelled; fast methods finish before a click could land.
    slow = [("library baseline", "SimpleITK B-spline")]
    page.get_by_label("Method family").click()
    page.get_by_role("option", name=slow[0][0], exact=True).click()
    _settle(page)
    page.get_by_label("Method", exact=True).click()
    options = page.get_by_role("option")
    names = [options.nth(i).inner_text() for i in range(options.count())]
    target = next((n for n in names if any(t in n for _, t in slow)), names[0])
    page.get_by_role("option", name=target, exact=True).click()
    _settle(page)
    page.get_by_role("button", name="Run registration").click()
    page.get_by_role("button", name="Cancel").wait_for()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("cancelled").first.wait_for(timeout=120_000)
    _settle(page)
    _no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "07_cancelled.png"), full_page=True)
    assert page.get_by_text("Saved as run").count() == 0


def test_3d_tri_planar_viewer_slider(server, page):
    page.goto(f"{server}/data")
    page.get_by_text("Current pair").first.wait_for()
    _settle(page)
    page.get_by_text("3D", exact=True).click()
    _settle(page)
    page.get_by_role("button", name="Use this sample pair").click()
    page.get_by_text("3D 2mm").first.wait_for()
    _settle(page)
    assert page.locator(".js-plotly-plot").count() >= 3, "three planes"
    axial = page.get_by_role("slider").nth(2)  # level, width, then axial / coronal / sagittal
    value = page.locator('[data-testid="stSliderThumbValue"]').nth(2)
    before = value.inner_text()
    axial.focus()
    page.keyboard.press("ArrowRight")
    _settle(page)
    assert page.locator('[data-testid="stSliderThumbValue"]').nth(2).inner_text() == str(int(before) + 1)
    _no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "08_data_3d.png"), full_page=True)
