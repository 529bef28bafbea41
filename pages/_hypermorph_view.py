"""The "Lambda" view of a HyperMorph run: a slider re-predicts the field for any regularisation weight.

HyperMorph's network takes lambda (0 = match the images only, 1 = smoothest field) as an input, so moving the
slider only runs the network again (:class:`regcore.hyper_sweep.HyperSweep`, loaded once per run and kept in
``st.session_state``). The view shows the warped moving image and det J at the chosen lambda, live Dice and
folding with the time the re-prediction took, and Dice / folding / SDlogJ over 11 lambdas with the chosen one
marked. Every number comes from regcore.
"""

from __future__ import annotations

import streamlit as st

from pages._views import ViewContext, view
from regcore import viz
from regcore.hyper_sweep import FAMILY, HyperSweep, SweepCurve

_STATE = "_hypermorph_sweep"  # session_state: {"record": RunRecord, "sweep": HyperSweep, "curve": SweepCurve}


def _sweep(record) -> tuple[HyperSweep, SweepCurve]:
    """The run's sweep and its lambda curve, built on the first visit of this run and kept after."""
    entry = st.session_state.get(_STATE)
    if entry is None or entry["record"] is not record:
        with st.spinner("Loading HyperMorph and sweeping lambda ..."):
            sweep = HyperSweep.from_record(record)
            entry = {"record": record, "sweep": sweep, "curve": sweep.curve()}
        st.session_state[_STATE] = entry
    return entry["sweep"], entry["curve"]


def _number(value, digits: int = 3, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _curves(ctx: ViewContext, curve: SweepCurve, lam: float) -> None:
    st.markdown("**Trade-off over lambda** (dotted line: the lambda shown above).")
    c1, c2 = st.columns(2)
    charts = []
    if any(d is not None for d in curve.dice_mean):
        charts.append(("Dice vs lambda", {"Dice (present in both)": curve.dice_mean}, "Dice", "curve_dice"))
    charts.append(
        (
            "Folding and SDlogJ vs lambda",
            {"folding %": curve.folding_percent, "SDlogJ": curve.sdlogj},
            "value",
            "curve_fold",
        )
    )
    for col, (title, series, y_title, name) in zip((c1, c2), charts):
        fig = viz.line_figure(
            curve.lambdas, series, title=title, x_title="lambda", y_title=y_title, height=300, markers=True
        )
        fig.add_vline(x=lam, line={"dash": "dot", "color": "#888", "width": 2})
        ctx.chart(fig, name, col)


@view(
    "Lambda",
    "HyperMorph re-predicts the field for any smoothness weight lambda: move the slider, the network runs again",
    when=lambda record: record.method == FAMILY,
)
def _lambda(ctx: ViewContext) -> None:
    record = ctx.record
    try:
        sweep, curve = _sweep(record)
    except (ValueError, OSError, RuntimeError) as exc:  # e.g. weights missing for a run read from a folder
        st.info(f"The lambda sweep needs HyperMorph's weights and the run's images: {exc}")
        return
    settings = sweep.settings
    if getattr(settings, "refine_iterations", 0) or record.result.extras.get("stages"):
        st.caption(
            "This run also used instance optimisation or an initial affine stage; the slider shows the "
            "network's field alone."
        )
    lam = st.slider(
        "Lambda (0 = match the images, 1 = smoothest field)",
        0.0,
        1.0,
        float(round(sweep.run_lambda, 2)),
        0.05,
        key=f"{ctx.key}_lambda",
    )
    point = sweep.at(lam)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Dice (present in both)", _number(point.dice_mean))
    m2.metric("Folded voxels", _number(point.folding_percent, 2, " %"))
    m3.metric("SDlogJ", _number(point.sdlogj))
    m4.metric("Re-predict", f"{point.total_s * 1000:.0f} ms", help="network, warps and metrics")
    st.caption(
        f"The run itself used lambda = {sweep.run_lambda:.2f}. Dice: mean over the structures present in "
        "both label maps. Folded voxels: det J <= 0."
    )

    axis, index = ctx.view.axis, ctx.view.index
    warped, jac = point.warped, point.jacobian
    if axis is not None:
        warped, jac = viz.extract_slice(warped, axis, index), viz.extract_slice(jac, axis, index)
    level, width = viz.auto_window(ctx.view.fixed)
    c1, c2 = st.columns(2)
    ctx.chart(
        viz.image_figure(
            warped,
            title=f"Warped moving, lambda = {lam:.2f}",
            level=level,
            width=width,
            flips=ctx.flips,
            height=ctx.height,
        ),
        "lam_warped",
        c1,
    )
    ctx.chart(
        viz.jacobian_figure(jac, title=f"det J, lambda = {lam:.2f}", flips=ctx.flips, height=ctx.height),
        "lam_jac",
        c2,
    )
    _curves(ctx, curve, lam)
