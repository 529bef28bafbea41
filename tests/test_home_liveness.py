"""Home's liveness: title and a busy placeholder come before the engine import, the placeholder never
outlives the run, and the server config keeps a visible running indicator and no file watcher.

Timings are not asserted here: benchmarks/app_latency.py (first Home on a fresh server) and
benchmarks/idle_cpu.py measure them.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
BUSY_TEXT = "Registering the sample pair"


@pytest.fixture(autouse=True)
def _chdir():
    old = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(old)


def _texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


class _BlockEngine(importlib.abc.MetaPathFinder):
    """Import hook: importing the engine doorway fails, as if it were still loading."""

    def find_spec(self, name, path=None, target=None):
        if name == "pages._backend":
            raise ImportError("engine import blocked by the test")
        return None


def test_title_and_busy_placeholder_are_drawn_before_the_engine_is_imported(monkeypatch):
    import pages

    for name in ("pages._backend", "pages._state"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.delattr(pages, name.split(".")[1], raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BlockEngine(), *sys.meta_path])
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.exception, "the blocked import must fail the page"
    assert [t.value for t in at.title] == ["RegLab"]
    assert any(BUSY_TEXT in t for t in _texts(at)), _texts(at)


def test_home_done_leaves_no_busy_placeholder():
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception and not at.error
    assert [m.label for m in at.metric] == ["Mean Dice", "Mean TRE", "Folded voxels", "Runtime"]
    assert not any(BUSY_TEXT in t for t in _texts(at)), "the placeholder must be replaced by the results"


def test_a_failed_sample_run_removes_the_placeholder_and_shows_an_error(monkeypatch):
    import streamlit as st

    from pages import _state as state

    def broken(dataset, method):
        raise RuntimeError(f"no {dataset} sample")

    st.cache_resource.clear()
    monkeypatch.setattr(state, "cached_default_run", broken)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert any("no shapes sample" in e.value for e in at.error)
    assert not any(BUSY_TEXT in t for t in _texts(at)), "no spinner left turning above the error"


def test_server_config_shows_the_running_indicator_and_watches_no_files():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["toolbarMode"] != "minimal", "minimal hides Streamlit's running indicator"
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"]["runOnSave"] is False
