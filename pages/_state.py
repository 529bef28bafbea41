"""Session state, caches and the never-a-traceback page wrapper shared by all pages.

Per-user data lives in ``st.session_state``: ``"pair"`` (a ``regcore.data.Pair``) and ``"runs"``
(``dict[label, regcore.run_record.RunRecord]``), and the decoded uploads (``"uploads"``, this session
only, bounded). The pair, the runs and the page choices are also kept on disk per browser session
(``pages/_session_store.py``), so a reload restores them: change them through :func:`set_pair`,
:func:`add_run` and :func:`remove_runs`. Sample pairs and the home page's default run are the same for everyone: they are cached
process-wide with ``st.cache_resource`` and treated as read-only, so nothing is built or registered twice
and two browser sessions never see each other's data.
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
from pages import _nav as nav
from pages import _session_panel as session_panel
from pages import _session_store as session_store

LOG = logging.getLogger("reglab.app")
DEFAULT_DATASET = "brain"
FALLBACK_DATASET = "shapes"
"""Home and the default pair use this built-in dataset when the brain sample cannot be built."""
FALLBACK_METHODS = ("fireants", "demons", "sitk_demons", "affine")
"""After ``regcore.methods.registry.DEFAULT_DEFORMABLE``, the first available of these is the default."""


def run_page(body: Callable[[], None], title: str = "") -> None:
    """Run a page body; any exception becomes a clear ``st.error`` and the session state survives.

    ``title`` is the page's registry name (``pages/_nav.py``), e.g. ``"data"``.
    """
    if title in {p.name for p in nav.PAGES}:
        nav.ensure_app_navigation(title)
    try:
        session_store.browser_session_id()
        session_store.restore(cached_sample_pair)
        session_store.keep_choices(title)
        session_panel.draw(cached_sample_pair)
        body()
    except Exception as e:  # noqa: BLE001 - the whole point: no traceback reaches the user
        LOG.error("page %s failed:\n%s", title, traceback.format_exc())
        st.error(
            f"**{type(e).__name__}:** {e}\n\nYour data and runs are kept; adjust the input and try again.",
            icon=":material/error:",
        )


def ensure_state() -> None:
    """Create the per-session keys once."""
    st.session_state.setdefault("runs", {})
    st.session_state.setdefault("loaded", {})


# -- cached data ------------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Preparing sample data ...", max_entries=16)
def cached_sample_pair(dataset: str, dims: int, contrast: str = "t1") -> Any:
    """Read-only sample Pair shared by all sessions (``dataset``: a name from ``list_sample_datasets``)."""
    kw = {"contrast": contrast} if contrast != "t1" else {}
    pair = backend.sample_pair(dataset=dataset, dims=dims, **kw)
    pair.meta["reglab_sample"] = [dataset, dims, contrast]  # how a saved session names it (no voxels)
    return pair


def default_sample_pair(dims: int = 2) -> tuple[Any, str | None]:
    """The brain sample pair, or the shapes pair when the brain one cannot be built: ``(pair, note)``,
    where ``note`` says why the fallback was used (None when it was not)."""
    try:
        return cached_sample_pair(DEFAULT_DATASET, dims), None
    except Exception as e:  # noqa: BLE001 - e.g. template files missing: the shapes sample needs none
        LOG.warning("sample %r pair failed (%s); using %r", DEFAULT_DATASET, e, FALLBACK_DATASET)
        return cached_sample_pair(
            FALLBACK_DATASET, dims
        ), f"the {DEFAULT_DATASET} sample is unavailable ({e})"


SAMPLE_RUN_SUFFIX = " (sample)"
"""Label ending of Home's shared sample run (recomputed from the cache, never stored per session)."""
UPLOADS_KEPT = 8
"""Decoded uploads a session keeps (by content), so a rerun does not decode them again."""


def _decode(name: str, suffix: str, data: bytes, kind: str, geometry=None):
    """Decode uploaded bytes in a private temporary folder (removed afterwards), within the voxel budget."""
    from pages import _limits as limits

    with tempfile.TemporaryDirectory(prefix="reglab_upload_") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        if kind == "landmarks":
            return backend.load_landmarks(str(path), geometry)
        return backend.load_image(
            str(path), is_labels=(kind == "labels"), max_voxels=limits.max_upload_voxels()
        )


def decode_upload(name: str, data: bytes, kind: str, geometry=None):
    """Decode an uploaded file (image/labels/landmarks); raises ValueError naming the file on failure.

    Bounded: at most ``REGLAB_MAX_UPLOAD_MB`` per file and ``REGLAB_MAX_UPLOAD_VOXELS`` decoded voxels
    (checked from the header before decoding; see ``pages/_limits.py``). Decoded files are kept in THIS
    session's state only (never shared with other browser sessions), at most :data:`UPLOADS_KEPT`.
    """
    from pages import _limits as limits

    if not data:
        raise ValueError(f"{name} is empty")
    if len(data) > limits.max_upload_bytes():
        raise ValueError(
            f"{name} is {len(data) / 1024**2:,.1f} MiB, more than the {limits.max_upload_bytes() // 1024**2} "
            "MiB this server accepts per file (REGLAB_MAX_UPLOAD_MB)"
        )
    base = Path(name).name
    suffix = "".join(Path(base).suffixes[-2:]) if base.lower().endswith(".gz") else Path(base).suffix
    if not suffix.replace(".", "").isalnum():
        raise ValueError(f"could not read {name!r} as {kind}: unsupported file name suffix {suffix!r}")
    key = (
        hashlib.sha1(data).hexdigest(),
        suffix.lower(),
        kind,
        repr(geometry) if geometry is not None else "",
    )
    store = st.session_state.setdefault("uploads", {})
    if key in store:
        return store[key]
    try:
        decoded = _decode(name, suffix.lower(), data, kind, geometry)
    except ValueError as e:
        raise ValueError(f"could not read {name!r} as {kind}: {_strip_temp(e)}") from None
    except MemoryError:
        raise ValueError(f"could not read {name!r} as {kind}: not enough memory on the server") from None
    except Exception as e:  # noqa: BLE001 - library errors (SimpleITK/nibabel) become one message
        raise ValueError(f"could not read {name!r} as {kind}: {type(e).__name__}: {_strip_temp(e)}") from None
    while len(store) >= UPLOADS_KEPT:
        store.pop(next(iter(store)))
    store[key] = decoded
    return decoded


def _strip_temp(exc: Exception) -> str:
    """The message without the server's temporary path (the visitor's file name is already named), in the
    server's terms (the voxel budget is REGLAB_MAX_UPLOAD_VOXELS, not an argument the visitor can pass)."""
    import re

    text = re.sub(r"\S*reglab_upload_\w+/upload[.\w]*:?\s*", "", str(exc)).strip() or type(exc).__name__
    return re.sub(
        r"max_voxels=([\d,]+); crop or downsample it first, or pass a larger max_voxels",
        r"this server's budget of \1 voxels per upload (REGLAB_MAX_UPLOAD_VOXELS); crop or downsample "
        "it first",
        text,
    )


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_default_run(dataset: str, method: str):
    """The home page's registered 2D sample pair as a RunRecord (computed once per process, shared
    read-only; its cached Jacobian and before-metrics are computed once for everyone)."""
    pair = cached_sample_pair(dataset, 2)
    result, metrics = backend.run_registration(pair, method)
    return backend.RunRecord(pair, result, metrics, label=f"{method}{SAMPLE_RUN_SUFFIX}")


def default_choice(pair):
    """:func:`regcore.methods.default_choice.default_deformable` for ``pair``, computed once per (fixed, moving)
    image objects (a 1 mm brain: ~0.1 s) and kept in the session."""
    kept = st.session_state.get("_default_choice")
    if kept is not None and kept[0] is pair.fixed and kept[1] is pair.moving:
        return kept[2]
    from regcore.methods.default_choice import default_deformable

    choice = default_deformable(pair.fixed, pair.moving)
    st.session_state["_default_choice"] = (pair.fixed, pair.moving, choice)
    return choice


def default_method(dims: int = 2, pair=None) -> str:
    """A fast, always-available method for first-open demos; with ``pair``, the default for that pair
    (:func:`default_choice`: demons between two contrasts in 3D)."""
    specs = {s.name: s for s in backend.method_specs()}
    from regcore.methods.registry import DEFAULT_DEFORMABLE

    first = default_choice(pair).method if pair is not None else DEFAULT_DEFORMABLE[3 if dims == 3 else 2]
    for name in (first, *FALLBACK_METHODS):
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
        st.session_state["pair"] = default_sample_pair(2)[0]
    return st.session_state["pair"]


def set_pair(pair) -> None:
    """Make ``pair`` the session's current pair (and keep it on disk for a reload)."""
    st.session_state["pair"] = pair
    session_store.save_pair(pair)


def runs() -> dict:
    """This session's runs: ``{label: RunRecord}`` in the order they were added."""
    ensure_state()
    return st.session_state["runs"]


def add_run(label: str, result, metrics: dict, pair) -> str:
    """Store a run (as a RunRecord) under a unique label in this session; returns the label used."""
    store = runs()
    base, k = label, 2
    while label in store:
        label = f"{base} #{k}"
        k += 1
    store[label] = backend.RunRecord(pair, result, metrics, label=label)
    _store_runs()
    return label


def suggested_run_name(method: str, checkpoint: str | None) -> str:
    """A run's default name: the method, plus the training run and weights file of a chosen checkpoint
    (``voxelmorph (20200101-000000/model.pt)``), so runs with different weights never share a name."""
    if not checkpoint:
        return method
    path = Path(str(checkpoint))
    return f"{method} ({path.parent.name}/{path.name})"


def remove_runs(labels) -> None:
    """Drop the runs called ``labels`` from this session (in memory and on disk)."""
    for label in labels:
        runs().pop(label, None)
    _store_runs()


def _store_runs() -> None:
    """Queue writing the session's own runs (not the shared sample run Home shows)."""
    session_store.save_runs({k: r for k, r in runs().items() if not k.endswith(SAMPLE_RUN_SUFFIX)})


def pair_dims(pair) -> int:
    return pair.fixed.ndim
