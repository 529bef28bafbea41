"""Home: a registered sample pair on first open (cached), then where to go next."""

from __future__ import annotations

import streamlit as st

from pages import _backend as backend
from pages import _nav as nav
from pages import _state as state
from regcore import viz


def _metric_delta(before: dict, after: dict, key: str, fmt: str = "{:.3f}"):
    a, b = after.get(key), before.get(key)
    if a is None:
        return "n/a", None
    return fmt.format(a), (None if b is None else fmt.format(a - b))


def _default_run(method: str):
    """The cached sample run (brain; the shapes sample when the brain one cannot be built) and a note."""
    try:
        return state.cached_default_run(state.DEFAULT_DATASET, method), None
    except Exception as e:  # noqa: BLE001 - brain template missing or broken: the shapes sample needs no files
        state.LOG.warning("home: %s sample failed: %s", state.DEFAULT_DATASET, e)
        return state.cached_default_run(state.FALLBACK_DATASET, method), (
            f"The brain sample is unavailable ({e}); showing the {state.FALLBACK_DATASET} sample instead."
        )


def body() -> None:
    state.ensure_state()
    st.title("RegLab")
    st.markdown(
        '<p class="rl-lead">An open workbench for medical image registration: look at your data, run '
        "classical and learned methods side by side, and see what a deformation does.</p>",
        unsafe_allow_html=True,
    )
    method = state.default_method(2)
    with st.spinner(f"Registering the sample pair with **{method}** ..."):
        record, note = _default_run(method)
    if note:
        st.warning(note, icon=":material/warning:")
    state.runs().setdefault(record.label, record)
    metrics, before = record.metrics, record.before_metrics
    cols = st.columns(4)
    v, d = _metric_delta(before, metrics, "dice_mean")
    cols[0].metric(
        "Mean Dice", v, d, help="Label overlap after registration (1 = perfect); delta vs. before."
    )
    v, d = _metric_delta(before, metrics, "tre_mean_mm", "{:.2f} mm")
    cols[1].metric("Mean TRE", v, d, delta_color="inverse", help="Landmark error after registration.")
    fold = metrics.get("folding_percent")
    cols[2].metric(
        "Folded voxels", "n/a" if fold is None else f"{fold:.3f} %", help="det J <= 0; 0 is ideal."
    )
    cols[3].metric(
        "Runtime",
        f"{metrics.get('runtime_s', record.result.runtime_s):.2f} s",
        help=f"{method} on {metrics.get('device', record.result.device)}",
    )
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
            s.warped, s.disp, step=6, title="Deformation grid", flips=s.flips, height=360
        ),
        width="stretch",
        key="home_grid",
    )
    st.caption(
        f"Pair: {record.pair_name} · method: {method} · the sample is registered once per server start "
        "and cached."
    )
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
