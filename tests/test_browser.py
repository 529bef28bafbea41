"""End-to-end: Playwright drives `streamlit run app.py` in Debian's headless chromium.

On fresh servers: the first page load shows only the registered pages (never Streamlit's listing
of the pages/ folder) and a direct page URL lands on that page. Then opens every page, runs a
registration, checks that the checkerboard and the Dice table appear, and saves screenshots to
test-artifacts/. Run: ``make test-browser`` or ``.venv/bin/python -m pytest tests/test_browser.py -m browser``.
"""

from __future__ import annotations

import time

import pytest
from app_server import stop_app_server
from browser_kit import (
    ARTIFACTS,
    SLOW_MS,
    goto_nav,
    load_3d_sample,
    no_traceback,
    settle,
    sidebar_links,
    start_server,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server():
    proc, url = start_server("streamlit.log")
    yield url
    stop_app_server(proc)


@pytest.fixture
def fresh_server():
    """A server no browser has talked to yet (Streamlit decides its pages/ mode on the first session)."""
    proc, url = start_server("streamlit_fresh.log")
    yield url
    stop_app_server(proc)


@pytest.fixture(scope="module")
def page(server, browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1900})
    pg = ctx.new_page()
    pg.set_default_timeout(SLOW_MS)
    yield pg
    ctx.close()


def _registered_titles() -> list[str]:
    from pages import _nav as nav

    return [p.title for p in nav.PAGES]


def _sidebar_text(page) -> str:
    side = page.locator('[data-testid="stSidebar"]')
    return side.inner_text() if side.count() else ""


def _watch_first_load(page, url: str, ready_text: str, shot: str) -> None:
    """Open ``url`` as the first request; until ``ready_text`` shows, the sidebar must never list the
    pages/ folder (private helper modules, 'app') nor show Streamlit's own page list."""
    private = {"app", "backend", "state", "widgets", "views", "nav", "panels", "report"}
    page.goto(url)
    deadline = time.time() + SLOW_MS / 1000
    first_shot = False
    while time.time() < deadline:
        words = {w.strip().lower() for w in _sidebar_text(page).splitlines() if w.strip()}
        assert not words & private, f"the sidebar listed the pages/ folder: {sorted(words & private)}"
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0, "Streamlit's page list was drawn"
        if not first_shot and sidebar_links(page):
            page.screenshot(path=str(ARTIFACTS / f"{shot}_first_paint.png"))
            first_shot = True
        if page.locator('[data-testid="stMain"]').get_by_text(ready_text).count():
            break
        page.wait_for_timeout(200)
    settle(page)
    assert page.get_by_text("Page not found").count() == 0
    no_traceback(page)
    assert sidebar_links(page) == _registered_titles()
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)


def test_fresh_server_first_load_shows_only_the_registered_pages(fresh_server, browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(SLOW_MS)
    try:
        _watch_first_load(pg, fresh_server, "Mean Dice", "00_fresh_home")
        assert pg.get_by_role("heading", name="RegLab").count()
    finally:
        ctx.close()


def test_fresh_server_direct_page_urls_land_on_their_page(fresh_server, browser):
    """The first request of a fresh server is a page URL; then more page URLs in new tabs (new sessions)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        # (url path, text in that page's main area)
        for path, ready in (
            ("data", "Current pair"),
            ("evaluate", "No runs yet"),
            ("train", "Train"),
            ("learn", "Concept"),
            ("register", "Run registration"),
        ):
            pg = ctx.new_page()
            pg.set_default_timeout(SLOW_MS)
            _watch_first_load(pg, f"{fresh_server}/{path}", ready, f"00_fresh_{path}")
            assert pg.url.split("?")[0].rstrip("/").endswith(f"/{path}"), pg.url
            assert pg.locator('[data-testid="stMain"]').get_by_text(ready).count(), f"/{path} shows its page"
            pg.close()
    finally:
        ctx.close()


def test_every_page_registration_checkerboard_and_dice(server, page):
    page.goto(server)
    page.get_by_text("Mean Dice").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    settle(page)
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "01_home.png"), full_page=True)

    goto_nav(page, "Data")
    page.get_by_text("Current pair").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "02_data.png"), full_page=True)

    goto_nav(page, "Learn")
    page.locator(".js-plotly-plot").first.wait_for()
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "03_learn.png"), full_page=True)

    goto_nav(page, "Train")
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "04_train.png"), full_page=True)

    goto_nav(page, "Register")
    page.get_by_role("button", name="Run registration").click()
    page.get_by_text("Saved as run").first.wait_for()
    settle(page)
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "05_register.png"), full_page=True)

    goto_nav(page, "Evaluate & compare")
    page.get_by_text("After: fixed | warped").first.wait_for()  # checkerboard title (plotly SVG text)
    page.get_by_text("Dice per structure").first.wait_for()
    settle(page)
    no_traceback(page)
    assert page.locator('[data-testid="stDataFrame"]').count() >= 2, "comparison and Dice tables"
    page.screenshot(path=str(ARTIFACTS / "06_evaluate.png"), full_page=True)


def test_cancel_stops_a_running_registration(server, page):
    page.goto(server)
    page.get_by_text("Mean Dice").first.wait_for()
    settle(page)
    goto_nav(page, "Register")
    # SimpleITK B-spline takes seconds on a 2D pair and stops at its next iteration event when
    # cancelled; fast methods finish before a click could land.
    slow = [("library baseline", "SimpleITK B-spline")]
    page.get_by_label("Method family").click()
    page.get_by_role("option", name=slow[0][0], exact=True).click()
    settle(page)
    page.get_by_label("Method", exact=True).click()
    options = page.get_by_role("option")
    names = [options.nth(i).inner_text() for i in range(options.count())]
    target = next((n for n in names if any(t in n for _, t in slow)), names[0])
    page.get_by_role("option", name=target, exact=True).click()
    settle(page)
    page.get_by_role("button", name="Run registration").click()
    page.get_by_role("button", name="Cancel").wait_for()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("cancelled").first.wait_for(timeout=120_000)
    settle(page)
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "07_cancelled.png"), full_page=True)
    assert page.get_by_text("Saved as run").count() == 0


def test_auto_boxes_are_greyed_and_custom_keeps_what_was_typed(server, page):
    """fireants' preset auto greys out the schedule boxes with the values that run; a value typed under custom
    survives a trip to auto and back (in the browser a box that is not drawn loses its widget state, which
    AppTest does not show)."""
    page.goto(server)
    page.get_by_text("Mean Dice").first.wait_for()
    settle(page)
    goto_nav(page, "Register")
    page.get_by_label("Method", exact=True).click()
    page.get_by_role("option", name="FireANTs", exact=False).first.click()
    settle(page)

    def set_preset(value: str) -> None:
        page.get_by_role("combobox", name="Preset").click()
        page.get_by_role("option", name=value, exact=True).click()
        settle(page)

    iterations = page.get_by_role("textbox", name="Iterations")
    assert iterations.is_disabled(), "auto sets the iterations"
    auto_value = iterations.input_value()
    set_preset("custom")
    assert iterations.is_enabled() and iterations.input_value() == auto_value, (
        "custom starts from auto's values"
    )
    iterations.fill("60, 40")
    iterations.press("Enter")
    settle(page)
    set_preset("auto")
    assert iterations.is_disabled() and iterations.input_value() == auto_value
    set_preset("custom")
    assert iterations.input_value() == "60, 40"
    no_traceback(page)


def test_3d_tri_planar_viewer_slider(server, page):
    load_3d_sample(page, server)
    assert page.locator(".js-plotly-plot").count() >= 3, "three planes"
    axial = page.get_by_role("slider").nth(2)  # level, width, then axial / coronal / sagittal
    value = page.locator('[data-testid="stSliderThumbValue"]').nth(2)
    before = value.inner_text()
    axial.focus()
    page.keyboard.press("ArrowRight")
    settle(page)
    assert page.locator('[data-testid="stSliderThumbValue"]').nth(2).inner_text() == str(int(before) + 1)
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "08_data_3d.png"), full_page=True)
