"""Session state, caches and the never-a-traceback page wrapper shared by all pages.

Per-user data lives in ``st.session_state`` (``"pair"``, ``"runs"``); decoded files, sample
pairs and the home page's default registration are cached process-wide with
``st.cache_resource`` and treated as read-only, so two browser sessions never see each
other's data and nothing is decoded twice.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from pages import _backend as backend

LOG = logging.getLogger("reglab.app")
DEFAULT_DATASET = "brain"
DEFAULT_METHOD_PREFERENCE = ("fireants", "sitk_demons", "demons", "affine")


def _ensure_app_navigation(page: str) -> None:
    """A fresh server whose first request is a page URL (e.g. /data) runs that page through
    Streamlit's legacy pages/ mode, without app.py (no style, wrong menu). Hop through app.py once,
    asking it to open the requested page."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
        legacy = bool(PagesManager.uses_pages_directory)
    except (ImportError, AttributeError):  # internal API moved: keep the page working as is
        return
    if legacy and page and not st.session_state.get("_reglab_app_ran"):
        st.session_state["_reglab_requested_page"] = page
        st.switch_page("app.py")


def run_page(body: Callable[[], None], title: str = "") -> None:
    """Run a page body; any exception becomes a clear ``st.error`` and the session state survives."""
    _ensure_app_navigation(title)
    try:
        body()
    except Exception as e:  # noqa: BLE001 - the whole point: no traceback reaches the user
        LOG.error("page %s failed:\n%s", title, traceback.format_exc())
        st.error(f"**{type(e).__name__}:** {e}\n\nYour data and runs are kept; adjust the input and try again.",
                 icon=":material/error:")


def ensure_state() -> None:
    """Create the per-session keys once."""
    st.session_state.setdefault("runs", {})
    st.session_state.setdefault("loaded", {})


# -- cached data ------------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Preparing sample data ...", max_entries=16)
def cached_sample_pair(dataset: str, dims: int, contrast: str = "t1") -> Any:
    """Read-only sample Pair shared by all sessions."""
    kw = {"contrast": contrast} if dataset != "synthetic" and contrast != "t1" else {}
    return backend.sample_pair(dataset=dataset, dims=dims, **kw)


@st.cache_resource(show_spinner=False, max_entries=32)
def _decode_cached(digest: str, suffix: str, _data: bytes, kind: str, geometry_key: Any = None):
    """Decode uploaded bytes once per content (cache key = sha1 digest, not the bytes); read-only result."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(_data)
        if kind == "landmarks":
            return backend.load_landmarks(str(path), geometry_key)
        return backend.load_image(str(path), is_labels=(kind == "labels"))


def decode_upload(name: str, data: bytes, kind: str, geometry=None):
    """Decode an uploaded file (image/labels/landmarks); raises ValueError naming the file on failure."""
    if not data:
        raise ValueError(f"{name} is empty")
    suffix = "".join(Path(name).suffixes[-2:]) if name.endswith(".gz") else Path(name).suffix
    digest = hashlib.sha1(data).hexdigest()
    try:
        return _decode_cached(digest, suffix.lower(), data, kind, geometry)
    except ValueError as e:
        raise ValueError(f"could not read {name!r} as {kind}: {e}") from None
    except Exception as e:  # noqa: BLE001 - library errors (SimpleITK/nibabel) become one message
        raise ValueError(f"could not read {name!r} as {kind}: {type(e).__name__}: {e}") from None


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_default_registration(dataset: str, method: str):
    """The home page's registered sample pair (computed once per process, read-only)."""
    pair = cached_sample_pair(dataset, 2)
    return backend.run_registration(pair, method)


def default_method(dims: int = 2) -> str:
    """A fast, always-available method for first-open demos."""
    specs = {s.name: s for s in backend.method_specs()}
    for name in DEFAULT_METHOD_PREFERENCE:
        s = specs.get(name)
        if s is not None and backend.spec_unavailable_reason(s, dims) is None and not s.needs_training:
            return name
    for s in specs.values():
        if backend.spec_unavailable_reason(s, dims) is None and not s.needs_training:
            return s.name
    return next(iter(specs))


def current_pair():
    """The session's Pair; defaults to the shared 2D sample pair."""
    ensure_state()
    if st.session_state.get("pair") is None:
        try:
            st.session_state["pair"] = cached_sample_pair(DEFAULT_DATASET, 2)
        except Exception as e:  # noqa: BLE001 - sample builder missing/broken: synthetic keeps the app alive
            LOG.warning("sample pair failed (%s); using synthetic pair", e)
            st.session_state["pair"] = cached_sample_pair("synthetic", 2)
    return st.session_state["pair"]


def add_run(label: str, result, metrics: dict, pair) -> str:
    """Store a run under a unique label in this session; returns the label used."""
    ensure_state()
    runs = st.session_state["runs"]
    base, k = label, 2
    while label in runs:
        label = f"{base} #{k}"
        k += 1
    runs[label] = {"result": result, "metrics": metrics, "pair_name": getattr(pair, "name", "pair"), "pair": pair}
    return label


def pair_dims(pair) -> int:
    return pair.fixed.ndim
