"""Home: a registered sample pair on first open (cached), then where to go next."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages import _backend as backend
from pages import _panels as panels
from pages import _state as state
from regcore import viz


def _metric_delta(before: dict, after: dict, key: str, fmt: str = "{:.3f}"):
    a, b = after.get(key), before.get(key)
    if a is None:
        return "n/a", None
    return fmt.format(a), (None if b is None else fmt.format(a - b))


def quick_before(run: dict) -> dict:
    """Mean Dice and TRE of 'no registration' (cheap: no surface distances); cached in the run."""
    if "_quick_before" not in run:
        out = {}
        s = panels.slices_of(run, None, None) if run["result"].fixed.ndim == 2 else None
        if s is not None and s["fixed_labels"] is not None and s["moving_labels"] is not None:
            try:
                from regcore.metrics.overlap import dice_per_label
                out["dice_mean"] = float(np.nanmean(list(dice_per_label(s["fixed_labels"], s["moving_labels"]).values())))
            except ImportError:
                from regcore.labs.tradeoff import mean_dice
                out["dice_mean"] = mean_dice(s["fixed_labels"], s["moving_labels"])
        lv = panels.landmark_views(run)
        if lv is not None:
            out["tre_mean_mm"] = float(lv["tre_before"].mean())
        run["_quick_before"] = out
    return run["_quick_before"]


def body() -> None:
    state.ensure_state()
    st.title("RegLab")
    st.markdown('<p class="rl-lead">An open workbench for medical image registration: look at your data, run '
                'classical and learned methods side by side, and see what a deformation does.</p>',
                unsafe_allow_html=True)
    method = state.default_method(2)
    with st.spinner(f"Registering the sample pair with **{method}** ..."):
        try:
            result, metrics = state.cached_default_registration(state.DEFAULT_DATASET, method)
            pair = state.cached_sample_pair(state.DEFAULT_DATASET, 2)
        except Exception as e:  # noqa: BLE001 - sample data unavailable: fall back to the synthetic pair
            st.warning(f"Sample brain pair unavailable ({e}); showing a synthetic phantom instead.")
            result, metrics = state.cached_default_registration("synthetic", method)
            pair = state.cached_sample_pair("synthetic", 2)
    run = {"result": result, "metrics": metrics, "pair": pair, "pair_name": pair.name}
    runs = st.session_state["runs"]
    label = f"{method} (sample)"
    if label not in runs:
        runs[label] = run
    run = runs[label]
    before = quick_before(run)
    cols = st.columns(4)
    v, d = _metric_delta(before, metrics, "dice_mean")
    cols[0].metric("Mean Dice", v, d, help="Label overlap after registration (1 = perfect); delta vs. before.")
    v, d = _metric_delta(before, metrics, "tre_mean_mm", "{:.2f} mm")
    cols[1].metric("Mean TRE", v, d, delta_color="inverse", help="Landmark error after registration.")
    fold = metrics.get("folding_percent")
    cols[2].metric("Folded voxels", "n/a" if fold is None else f"{fold:.3f} %", help="det J <= 0; 0 is ideal.")
    cols[3].metric("Runtime", f"{metrics.get('runtime_s', result.runtime_s):.2f} s",
                   help=f"{method} on {metrics.get('device', result.device)}")
    s = panels.slices_of(run, None, None)
    flips = viz.display_flips(result.fixed.geometry.orientation_codes())
    c1, c2, c3 = st.columns(3)
    c1.plotly_chart(viz.checkerboard_figure(s["fixed"], s["moving"], 16, title="Before: fixed | moving",
                                            flips=flips, height=360), width="stretch", key="home_cb0")
    c2.plotly_chart(viz.checkerboard_figure(s["fixed"], s["warped"], 16, title="After: fixed | warped",
                                            flips=flips, height=360), width="stretch", key="home_cb1")
    c3.plotly_chart(viz.grid_overlay_figure(s["warped"], s["disp"], step=6, title="Deformation grid",
                                            flips=flips, height=360), width="stretch", key="home_grid")
    st.caption(f"Pair: {pair.name} · method: {method} · the sample is registered once per server start and cached.")
    st.divider()
    st.subheader("Where next")
    g = st.columns(4)
    g[0].page_link("pages/data.py", label="Data: load and inspect images", icon=":material/database:")
    g[1].page_link("pages/register.py", label="Register: pick a method and run", icon=":material/join_inner:")
    g[2].page_link("pages/evaluate.py", label="Evaluate: compare runs and export", icon=":material/compare:")
    g[3].page_link("pages/learn.py", label="Learn: concept labs", icon=":material/school:")
    notes = backend.backend_notes()
    if notes:
        with st.expander("Engine status"):
            for n in notes:
                st.caption(n)


state.run_page(body, "home")
