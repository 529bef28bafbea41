"""Home: a registered sample pair on first open (cached), then where to go next.

Drawn in two steps so a fresh server paints at once: the title, lead text and a busy placeholder
(spinner + skeleton, ``BUSY_HTML``) go out BEFORE the engine is imported (torch, numba and regcore
take seconds on a fresh server), then the metrics and figures replace the placeholder when the
cached sample run is ready (``st.cache_resource``: registered once per server process).
"""

from __future__ import annotations

import sys
import time

import streamlit as st

BUSY_TEXT = "Registering the sample pair"  # the placeholder's text: the browser benchmark looks for it
LEAD = (
    "An open workbench for medical image registration: look at your data, run classical and learned "
    "methods side by side, and see what a deformation does."
)


def header() -> None:
    """Title and lead text: cheap, drawn first. Plain markdown (no unsafe HTML): the browser draws it
    without fetching another script chunk from a server that may be busy importing."""
    st.title("RegLab")
    with st.container(key="rl_lead"):  # styled by assets/style.css (.st-key-rl_lead)
        st.markdown(LEAD)


def show_busy(slot, text: str, step: str) -> None:
    """Fill ``slot`` (an ``st.empty``) with the busy placeholder: a spinner, ``text`` (markdown) and a
    skeleton of the metrics and figures, drawn by assets/style.css (.st-key-rl_busy_*); ``step`` names
    the phase (a key is unique per run)."""
    with slot.container(key=f"rl_busy_{step}"):
        st.markdown(text)


def let_the_page_paint() -> None:
    """Before the first engine import of this process: let the server send what is drawn so far.

    Importing torch/numba holds the GIL in long stretches, so the server's event loop would send the
    title and placeholder only after it; a short sleep releases the GIL first. No-op once imported."""
    if "regcore.register" not in sys.modules:
        time.sleep(0.15)


header()
SLOT = st.empty()
show_busy(SLOT, f"{BUSY_TEXT} ... (loading the registration engine)", "engine")
let_the_page_paint()

# Imported only now, after the placeholder is on the page: the engine import takes seconds on a fresh server.
from pages import _backend as backend  # noqa: E402
from pages import _nav as nav  # noqa: E402
from pages import _state as state  # noqa: E402
from pages import _widgets as widgets  # noqa: E402
from regcore import viz  # noqa: E402


def _default_run(method: str):
    """The cached sample run (brain; the shapes sample when the brain one cannot be built) and a note."""
    try:
        return state.cached_default_run(state.DEFAULT_DATASET, method), None
    except Exception as e:  # noqa: BLE001 - brain template missing or broken: the shapes sample needs no files
        state.LOG.warning("home: %s sample failed: %s", state.DEFAULT_DATASET, e)
        return state.cached_default_run(state.FALLBACK_DATASET, method), (
            f"The brain sample is unavailable ({e}); showing the {state.FALLBACK_DATASET} sample instead."
        )


def sample_run_view(record, method: str, note: str | None) -> None:
    """Metric cards and the before/after/grid figures of the sample run."""
    if note:
        st.warning(note, icon=":material/warning:")
    widgets.before_after_metrics(record, f"{method} on {record.metrics.get('device', record.result.device)}")
    s = record.slice()
    c1, c2, c3 = st.columns(3)
    c1.plotly_chart(
        viz.checkerboard_figure(
            s.fixed, s.moving, 16, title="Before: fixed | moving", flips=s.flips, height=360
        ),
        width="stretch",
        key="home_cb0",
    )
    c2.plotly_chart(
        viz.checkerboard_figure(
            s.fixed, s.warped, 16, title="After: fixed | warped", flips=s.flips, height=360
        ),
        width="stretch",
        key="home_cb1",
    )
    c3.plotly_chart(
        viz.grid_overlay_figure(
            s.warped,
            s.disp,
            step=viz.default_step(s.fixed.shape),
            title="Deformation grid",
            flips=s.flips,
            height=360,
        ),
        width="stretch",
        key="home_grid",
    )
    st.caption(
        f"Pair: {record.pair_name} · method: {method} · the sample is registered once per server start "
        "and cached."
    )


def body() -> None:
    state.ensure_state()
    method = state.default_method(2)
    show_busy(SLOT, f"{BUSY_TEXT} with **{method}** ...", "run")
    try:
        record, note = _default_run(method)
    except Exception:
        SLOT.empty()  # no spinner left turning above the error message
        raise
    state.runs().setdefault(record.label, record)
    with SLOT.container():
        sample_run_view(record, method, note)
    st.divider()
    st.subheader("Where next")
    links = [p for p in nav.PAGES if p.blurb]
    per_row = 3
    for row in range(0, len(links), per_row):
        for col, p in zip(st.columns(per_row), links[row : row + per_row]):
            col.page_link(p.path, label=p.blurb, icon=p.icon)
    notes = backend.backend_notes()
    if notes:
        with st.expander("Engine status"):
            for n in notes:
                st.caption(n)


state.run_page(body, "home")
