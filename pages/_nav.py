"""The dashboard's pages, in one registry, and the navigation app.py draws from it.

A new page is one file in ``pages/`` plus one :class:`PageSpec` entry in :data:`PAGES`; app.py,
the sidebar, Home's "Where next" links and the tests all read this list. Imports only
streamlit (no regcore), so it is cheap to run first.

Why the sidebar is drawn here and not by ``st.navigation(position="sidebar")``: Streamlit
runs a server whose main script has a ``pages/`` folder beside it in its legacy multipage mode
until the first ``st.navigation`` call of the process (``PagesManager.uses_pages_directory``).
In that mode the first request of a fresh server lists every ``pages/*.py`` (private helpers
included) in the sidebar and runs a page URL such as ``/data`` without app.py. The product
layout keeps the folder named ``pages/``, so ``.streamlit/config.toml`` sets
``client.showSidebarNavigation = false`` (that listing is never drawn), app.py registers the
pages with ``position="hidden"`` and draws these links itself, and :func:`ensure_app_navigation`
sends a page that was started without app.py through app.py once (the URL stays the page's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

APP_SCRIPT = "app.py"
_APP_RAN = "_reglab_app_ran"
_REQUESTED = "_reglab_requested_page"
_HOPPED = "_reglab_hopped"


@dataclass(frozen=True)
class PageSpec:
    """One dashboard page.

    Attributes:
        path: the page script, relative to the repository root (``pages/<name>.py``).
        title: sidebar and browser-tab title.
        icon: a ``:material/...:`` icon.
        blurb: one line for Home's "Where next" links ("" = not listed there).
        default: the page at ``/`` (exactly one).
    """

    path: str
    title: str
    icon: str
    blurb: str = ""
    default: bool = False

    @property
    def name(self) -> str:
        """The page's URL path (``/data``) and key: the script's file name without ``.py``."""
        return Path(self.path).stem


PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/home.py", "Home", ":material/home:", default=True),
    PageSpec("pages/data.py", "Data", ":material/database:", "Data: load and inspect images"),
    PageSpec("pages/register.py", "Register", ":material/join_inner:", "Register: pick a method and run"),
    PageSpec(
        "pages/evaluate.py", "Evaluate & compare", ":material/compare:", "Evaluate: compare runs and export"
    ),
    PageSpec("pages/train.py", "Train", ":material/model_training:", "Train: learned models on your data"),
    PageSpec("pages/batch.py", "Batch", ":material/dynamic_feed:", "Batch: many methods x pairs, sweeps"),
    PageSpec("pages/atlas.py", "Atlas", ":material/stacks:", "Atlas: build a template from many subjects"),
    PageSpec(
        "pages/segment.py", "Multi-atlas segmentation", ":material/label:", "Segment: fuse labelled atlases"
    ),
    PageSpec("pages/learn.py", "Learn", ":material/school:", "Learn: concept labs"),
    PageSpec(
        "pages/glossary.py", "Glossary", ":material/menu_book:", "Glossary: every measure in plain words"
    ),
)


def page(name: str) -> PageSpec:
    """The registered page called ``name`` (its file stem, e.g. ``"evaluate"``)."""
    for p in PAGES:
        if p.name == name:
            return p
    raise ValueError(f"unknown page {name!r}; registered: {[p.name for p in PAGES]}")


def streamlit_pages() -> list:
    """``st.Page`` objects for :func:`st.navigation`, in registry order."""
    return [
        st.Page(p.path, title=p.title, icon=p.icon, default=p.default, url_path=None if p.default else p.name)
        for p in PAGES
    ]


def run_app_navigation() -> None:
    """app.py's navigation: register the pages, draw the sidebar links, then run the current page.

    A page started without app.py (see the module docstring) asked for itself in session state;
    it is opened here, after the pages are registered.
    """
    st.session_state[_APP_RAN] = True
    pages = streamlit_pages()
    current = st.navigation(pages, position="hidden")
    with st.sidebar:
        for p in pages:
            st.page_link(p, label=p.title, icon=p.icon)
    requested = st.session_state.pop(_REQUESTED, None)
    if requested and requested in {p.name for p in PAGES}:
        st.switch_page(page(requested).path)
    current.run()


def ensure_app_navigation(name: str) -> None:
    """Call first in a page script: when Streamlit started this page without app.py (legacy mode
    of a fresh server), go through app.py once, which opens this page again with its navigation."""
    from streamlit.runtime.pages_manager import PagesManager

    if (
        not PagesManager.uses_pages_directory
        or st.session_state.get(_APP_RAN)
        or st.session_state.get(_HOPPED)
    ):
        return
    st.session_state[_HOPPED] = True  # at most once per session: never a loop
    st.session_state[_REQUESTED] = name
    st.switch_page(APP_SCRIPT)
