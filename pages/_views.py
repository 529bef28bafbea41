"""Picture views of one run (Home and Evaluate): a registry, so a new view is one decorated function.

    @view("Checkerboard", "Alternating tiles of fixed and moving/warped")
    def _checkerboard(ctx: ViewContext) -> None: ...

Each view draws from a :class:`ViewContext`: the run (``regcore.run_record.RunRecord``: metrics,
before-metrics, landmarks, Jacobian), one slice of it (``RunSlice``: 2D arrays + display flips),
a widget-key prefix and a height. Views only draw: every number comes from regcore.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from pages import _widgets as widgets
from pages._backend import RunRecord, RunSlice
from regcore import viz


@dataclass(frozen=True)
class ViewContext:
    """What a view draws from. ``key`` prefixes widget keys; ``height`` is the panel height in px."""

    record: RunRecord
    view: RunSlice
    key: str
    height: int = 420

    @property
    def flips(self) -> tuple[bool, bool]:
        return self.view.flips

    def chart(self, fig, name: str, col=None) -> None:
        """Draw a plotly figure with a stable key (``<key>_<name>``), in ``col`` or the page."""
        (col or st).plotly_chart(fig, width="stretch", key=f"{self.key}_{name}")


@dataclass(frozen=True)
class View:
    """A registered view: its title (the segmented-control option), draw function and help text."""

    title: str
    render: Callable[[ViewContext], None]
    help: str = ""
    when: Callable[[RunRecord], bool] | None = None  # shown only for runs where this is true


VIEWS: list[View] = []
"""The views in display order (the first is the default)."""


def view(
    title: str, help: str = "", when: Callable[[RunRecord], bool] | None = None
) -> Callable[[Callable[[ViewContext], None]], Callable[[ViewContext], None]]:
    """Decorator: register ``fn(ctx)`` as a view called ``title`` (appended to :data:`VIEWS`); ``when(record)``
    limits it to the runs it applies to."""

    def register(fn: Callable[[ViewContext], None]) -> Callable[[ViewContext], None]:
        if any(v.title == title for v in VIEWS):
            raise ValueError(f"a view called {title!r} is already registered")
        VIEWS.append(View(title, fn, help, when))
        return fn

    return register


def render_views(record: RunRecord, key: str, height: int = 420) -> RunSlice:
    """Slice picker (3D), view chooser and the chosen view of one run; returns the slice shown."""
    axis, index = widgets.slice_picker(record.shape, key)
    shown = record.slice(axis, index)
    shown_views = [v for v in VIEWS if v.when is None or v.when(record)]
    titles = [v.title for v in shown_views]
    if st.session_state.get(f"{key}_view") not in (None, *titles):  # a view the newly chosen run lacks
        st.session_state.pop(f"{key}_view")
    picked = st.segmented_control("View", titles, default=titles[0], key=f"{key}_view") or titles[0]
    chosen = shown_views[titles.index(picked)]
    if chosen.help:
        st.caption(chosen.help[0].upper() + chosen.help[1:] + ".")
    chosen.render(ViewContext(record, shown, key, height))
    return shown


# -- the views ----------------------------------------------------------------------------------------
@view(
    "Checkerboard", "alternating tiles of fixed and moving (before) or warped (after); edges should line up"
)
def _checkerboard(ctx: ViewContext) -> None:
    s = ctx.view
    tile = st.slider("Tile size (voxels)", 2, max(4, min(s.fixed.shape) // 2), 16, key=f"{ctx.key}_tile")
    c1, c2 = st.columns(2)
    ctx.chart(
        viz.checkerboard_figure(
            s.fixed, s.moving, tile, title="Before: fixed | moving", flips=ctx.flips, height=ctx.height
        ),
        "cb0",
        c1,
    )
    ctx.chart(
        viz.checkerboard_figure(
            s.fixed, s.warped, tile, title="After: fixed | warped", flips=ctx.flips, height=ctx.height
        ),
        "cb1",
        c2,
    )


@view("Blend", "fade from fixed to warped")
def _blend(ctx: ViewContext) -> None:
    alpha = st.slider("Blend: fixed -> warped", 0.0, 1.0, 0.5, 0.05, key=f"{ctx.key}_alpha")
    ctx.chart(
        viz.blend_figure(ctx.view.fixed, ctx.view.warped, alpha, flips=ctx.flips, height=ctx.height), "blend"
    )


@view("Flicker / side by side", "fixed and warped next to each other, and alternating")
def _flicker(ctx: ViewContext) -> None:
    s, h = ctx.view, ctx.height - 60
    c1, c2, c3 = st.columns(3)
    ctx.chart(viz.image_figure(s.fixed, title="Fixed", flips=ctx.flips, height=h), "sbs0", c1)
    ctx.chart(viz.image_figure(s.warped, title="Warped moving", flips=ctx.flips, height=h), "sbs1", c2)
    ctx.chart(viz.flicker_figure(s.fixed, s.warped, flips=ctx.flips, height=h), "flicker", c3)


@view("Difference", "signed intensity difference to fixed, before and after, on one colour scale")
def _difference(ctx: ViewContext) -> None:
    s = ctx.view
    before, after = viz.before_after_difference_figures(
        s.fixed, s.moving, s.warped, flips=ctx.flips, height=ctx.height
    )
    c1, c2 = st.columns(2)
    ctx.chart(before, "diff0", c1)
    ctx.chart(after, "diff1", c2)


@view("Deformation grid", "the fixed grid carried by the transform")
def _grid(ctx: ViewContext) -> None:
    auto = viz.default_step(ctx.view.fixed.shape)
    step = st.slider("Grid spacing (voxels)", 2, max(24, 3 * auto), auto, key=f"{ctx.key}_gstep")
    ctx.chart(
        viz.grid_overlay_figure(
            ctx.view.warped, ctx.view.disp, step=step, flips=ctx.flips, height=ctx.height
        ),
        "grid",
    )


@view("Arrows", "in-plane displacement arrows (fixed -> moving)")
def _arrows(ctx: ViewContext) -> None:
    c1, c2 = st.columns(2)
    auto = viz.default_step(ctx.view.fixed.shape, lines=14)
    step = c1.slider("Arrow spacing (voxels)", 2, max(24, 3 * auto), auto, key=f"{ctx.key}_qstep")
    scale = c2.slider("Arrow scale", 0.5, 5.0, 1.0, 0.5, key=f"{ctx.key}_qscale")
    ctx.chart(
        viz.quiver_figure(
            ctx.view.fixed, ctx.view.disp, step=step, scale=scale, flips=ctx.flips, height=ctx.height
        ),
        "quiver",
    )


@view("Jacobian", "local volume change of the transform, det J, with folded voxels in their own colour")
def _jacobian(ctx: ViewContext) -> None:
    folded = ctx.record.metrics.get("folding_percent")
    st.caption(
        "det J: white = 1 (no change), blue < 1 shrinks, red > 1 grows (log scale); "
        "bright green = det J <= 0, folding. Folded voxels in the whole volume: "
        + ("n/a" if folded is None else f"{viz.format_number(folded)} %")
        + "."
    )
    ctx.chart(viz.jacobian_figure(ctx.view.jac, flips=ctx.flips, height=ctx.height), "jac")


@view(
    "Contours", "label outlines, each structure in its colour: fixed solid, moving (before) or warped dotted"
)
def _contours(ctx: ViewContext) -> None:
    s = ctx.view
    if s.fixed_labels is None:
        st.info("This pair has no label maps; load labels on the Data page to see contours and Dice.")
        return
    names = ctx.record.label_names
    c1, c2 = st.columns(2)
    for col, other, title, k in (
        (c1, s.moving_labels, "Before: fixed (solid) vs moving (dotted)", 0),
        (c2, s.warped_labels, "After: fixed (solid) vs warped (dotted)", 1),
    ):
        fig = viz.image_figure(s.fixed, title=title, flips=ctx.flips, height=ctx.height)
        viz.add_contours(fig, s.fixed_labels, dash="solid", name="fixed", label_names=names)
        if other is not None:
            viz.add_contours(fig, other, dash="dot", name="moved", label_names=names)
        ctx.chart(fig, f"cont{k}", col)
    label_legend(s.fixed_labels, s.moving_labels, s.warped_labels, names=names)


def label_legend(*label_maps, names=None) -> None:
    """Compact legend (colour swatch, value, name) of the labels in ``label_maps`` (2D/3D arrays or None):
    the colours :func:`regcore.viz.label_color` gives them on every panel."""
    import numpy as np

    values = set()
    for lab in label_maps:
        if lab is not None:
            values |= {int(v) for v in np.unique(np.asarray(lab)) if v != 0}
    legend = viz.label_legend_html(values, names)
    if legend:
        st.html(legend)


@view("Landmarks", "true landmark positions vs where the transform maps them (arrows = residual error)")
def _landmarks(ctx: ViewContext) -> None:
    lm = ctx.record.landmarks
    if lm is None:
        st.info("This pair has no matched landmarks; load fixed and moving landmark CSVs on the Data page.")
        return
    s = ctx.view
    true2, keep = viz.points_in_slice(lm.moving_index, s.axis, s.index)
    fixed2, _ = viz.points_in_slice(lm.fixed_index, s.axis, s.index)
    mapped2, _ = viz.points_in_slice(lm.mapped_index, s.axis, s.index)
    ids = [i for i, k in zip(lm.ids, keep) if k]
    c1, c2 = st.columns(2)
    ctx.chart(
        viz.landmark_tre_figure(
            s.moving,
            true2,
            fixed2,
            ids=ids,
            title="Before: true (yellow) vs identity (red)",
            flips=ctx.flips,
            height=ctx.height,
        ),
        "lm0",
        c1,
    )
    ctx.chart(
        viz.landmark_tre_figure(
            s.moving,
            true2,
            mapped2,
            ids=ids,
            title="After: true (yellow) vs phi(fixed) (red)",
            flips=ctx.flips,
            height=ctx.height,
        ),
        "lm1",
        c2,
    )
    before, after = ctx.record.before_metrics.get("tre_mean_mm"), ctx.record.metrics.get("tre_mean_mm")
    if before is not None and after is not None:
        st.caption(
            f"Mean TRE {before:.2f} mm before -> {after:.2f} mm after ({len(lm)} landmarks"
            + ("" if s.axis is None else f", {len(ids)} within 2 voxels of this slice")
            + ")."
        )


@view(
    "3D viewer",
    "NiiVue: fixed with the warped image and labels in linked planes and a 3D render (whole volume; "
    "the slice picker above does not apply)",
    when=lambda record: record.ndim == 3,
)
def _niivue_3d(ctx: ViewContext) -> None:
    from pages._niivue_view import niivue_view

    rec = ctx.record
    label_maps = {"warped moving": rec.warped_labels, "fixed": rec.fixed_labels}
    present = [name for name, lab in label_maps.items() if lab is not None]
    shown = None
    if present:
        shown = st.segmented_control("Labels", present, default=present[0], key=f"{ctx.key}_nv_labels")
    niivue_view(
        rec.result.fixed,
        labels=label_maps.get(shown or ""),
        second=rec.result.warped,
        second_title="Warped moving",
        label_names=rec.label_names,
        key=f"{ctx.key}_nv",
        height=max(ctx.height, 560),
    )


from pages import _hypermorph_view, _mechanism_view  # noqa: E402,F401  (family views, registered last)
