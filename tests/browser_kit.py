"""What the browser tests share: Debian's chromium, the wait for a finished Streamlit run, the sidebar
links, the no-traceback check. Used by tests/test_browser.py and tests/test_walkthrough.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SLOW_MS = 240_000  # generous: the CI machine may be shared


def start_server(log_name: str, env: dict | None = None):
    """`streamlit run app.py` on a free port, as `make app` starts it; returns (process, url) once
    /_stcore/health answers. Skips when chromium is missing."""
    from app_server import start_app_server

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium, or `make browser-deps`)")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        return start_app_server(ARTIFACTS / log_name, env=env)
    except RuntimeError as e:
        pytest.fail(str(e))


def settle(page) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_timeout(500)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText"
        ".includes('Running')",
        timeout=SLOW_MS,
    )
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=SLOW_MS)
    page.wait_for_timeout(800)


def no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "a traceback reached the page"


def sidebar_links(page) -> list[str]:
    """Labels of the sidebar page links (the material icon's ligature text comes first: dropped)."""
    texts = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').all_inner_texts()
    return [t.strip().splitlines()[-1].strip() for t in texts if t.strip()]


def goto_nav(page, label: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').get_by_text(
        label, exact=True
    ).click()
    settle(page)


def load_3d_sample(page, server: str) -> None:
    """Data page: make the 3D brain sample the current pair."""
    page.goto(f"{server}/data")
    page.get_by_text("Current pair").first.wait_for()
    settle(page)
    page.get_by_text("3D", exact=True).click()
    settle(page)
    page.get_by_role("button", name="Use this sample pair").click()
    page.get_by_text("3D 2mm").first.wait_for()
    settle(page)
