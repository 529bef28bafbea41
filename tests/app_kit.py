"""Shared by the AppTest suites (``test_app_pages.py``, ``test_app_register.py``): open a page of the real app,
assert it rendered cleanly. Their working directory is the repository root (fixture ``app_root_cwd``)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 240


def registered_pages() -> list[str]:
    from pages import _nav as nav

    return [p.name for p in nav.PAGES]


def open_page(page: str) -> AppTest:
    """Run the app, then switch to registered page ``page`` (its file stem); returns the AppTest."""
    from pages import _nav as nav

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    spec = nav.page(page)
    if not spec.default:
        at.switch_page(spec.path).run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
