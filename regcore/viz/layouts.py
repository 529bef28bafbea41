"""Multi-panel layouts: panel grids, tri-planar views, the standard registration panels.

Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from regcore.viz.colors import label_legend_rows
from regcore.viz.comparisons import difference_figure, difference_limit
from regcore.viz.fields import grid_overlay_figure, jacobian_figure
from regcore.viz.panels import add_contours, add_heat_overlay, add_points, image_figure, slice_figure
from regcore.viz.slices import (
    as_array,
    auto_window,
    display_flips,
    extract_slice,
    image_flips,
    magnitude,
    plane_name,
    points_in_slice,
    slice_axes,
    slice_field,
)


def panel_grid(
    panels: Sequence[go.Figure], *, cols: int | None = None, height: int | None = None, title: str = ""
) -> go.Figure:
    """Image panels of this module (``image_figure``, ``slice_figure``, ``jacobian_figure``, ...) side by
    side in one figure, each keeping its traces, axis ranges (flips), square voxels and title.

    ``cols`` panels per row (default: all in one row); ``height`` of the whole figure (default: the
    first panel's height per row). Colour bars are placed at the right edge of their own panel.
    """
    from plotly.subplots import make_subplots

    panels = list(panels)
    if not panels:
        raise ValueError("panels must contain at least one figure")
    cols = int(cols or len(panels))
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    rows = -(-len(panels) // cols)
    titles = [(p.layout.title.text or "") if p.layout.title else "" for p in panels]
    grid = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.03,
        vertical_spacing=0.08 if rows > 1 else 0.0,
    )
    for k, panel in enumerate(panels):
        r, c = divmod(k, cols)
        ref = "" if k == 0 else str(k + 1)
        xdom = grid.layout[f"xaxis{ref}"].domain
        ydom = grid.layout[f"yaxis{ref}"].domain
        for trace in panel.data:
            if getattr(trace, "showscale", None):
                trace = go.Heatmap(trace).update(
                    colorbar={
                        "x": xdom[1],
                        "xanchor": "left",
                        "thickness": 10,
                        "y": (ydom[0] + ydom[1]) / 2,
                        "len": ydom[1] - ydom[0],
                    }
                )
            grid.add_trace(trace, row=r + 1, col=c + 1)
        src_x, src_y = panel.layout.xaxis, panel.layout.yaxis
        grid.update_xaxes(visible=False, range=src_x.range, constrain="domain", row=r + 1, col=c + 1)
        grid.update_yaxes(
            visible=False,
            range=src_y.range,
            constrain="domain",
            scaleanchor=f"x{ref}",
            scaleratio=1,
            row=r + 1,
            col=c + 1,
        )
    per_row = panels[0].layout.height or 300
    grid.update_layout(
        height=height or per_row * rows + (30 if title else 0),
        showlegend=False,
        margin={"l": 4, "r": 4, "t": 50 if title else 30, "b": 4, "pad": 0},  # no plot-background frame
        plot_bgcolor="#000",
        paper_bgcolor="rgba(0,0,0,0)",
        dragmode="pan",
        title={"text": title, "x": 0.5} if title else None,
    )
    grid.update_annotations(font_size=12)
    return grid


def triplanar_figure(
    volume,
    *,
    labels=None,
    label_names: Mapping[int, str] | None = None,
    points=None,
    overlay=None,
    overlay_name: str = "value",
    overlay_colorscale: str = "Hot",
    overlay_range: tuple[float, float] | None = None,
    overlay_threshold: float | None = 0.0,
    center: Sequence[int] | None = None,
    codes: str | None = None,
    title: str = "",
    height: int = 300,
) -> go.Figure:
    """Three orthogonal slices of a 3D volume through ``center`` (voxel index; default the middle).

    ``volume``, ``labels`` (label map) and ``overlay`` (a scalar map such as |u| in mm) are ``(*S)``
    arrays, tensors or Images on one grid; ``points`` ``(N, 3)`` voxel indices (drawn on slices within 2
    voxels). ``codes`` = orientation codes (read from ``volume`` when it is an Image) set the radiological
    flips and plane names. A 2D input gives one panel.
    """
    codes = codes or (volume.geometry.orientation_codes() if hasattr(volume, "geometry") else None)
    vol = as_array(volume)
    lab = as_array(labels) if labels is not None else None
    ovl = as_array(overlay) if overlay is not None else None
    for name, a in (("labels", lab), ("overlay", ovl)):
        if a is not None and a.shape != vol.shape:
            raise ValueError(f"{name} shape {a.shape} must match the volume's shape {vol.shape}")
    axes = (None,) if vol.ndim == 2 else (0, 1, 2)
    centre = [s // 2 for s in vol.shape] if center is None else [int(c) for c in center]
    if len(centre) != vol.ndim:
        raise ValueError(f"center must have {vol.ndim} entries, got {center}")
    level, width = auto_window(vol)
    panels = []
    for axis in axes:
        cut = (lambda a: a) if axis is None else (lambda a, ax=axis: extract_slice(a, ax, centre[ax]))
        name = "slice" if axis is None else f"{plane_name(codes, axis)} ({centre[axis]})"
        flips = display_flips(codes, slice_axes(vol.ndim, axis))
        fig = slice_figure(
            cut(vol),
            labels=cut(lab) if lab is not None else None,
            label_names=label_names,
            title=name,
            level=level,
            width=width,
            flips=flips,
            height=height,
        )
        if ovl is not None:
            lo, hi = overlay_range or (float(np.nanmin(ovl)), float(np.nanmax(ovl)))
            add_heat_overlay(
                fig,
                cut(ovl),
                colorscale=overlay_colorscale,
                zmin=lo,
                zmax=hi,
                threshold=overlay_threshold,
                name=overlay_name,
                showscale=axis in (None, 2),
            )
        if points is not None and len(points):
            in_plane, _ = points_in_slice(as_array(points), axis, None if axis is None else centre[axis])
            if len(in_plane):
                add_points(fig, in_plane)
        panels.append(fig)
    grid = panel_grid(panels, height=height, title=title)
    if lab is not None:
        add_label_legend(grid, _present_values(lab), label_names)
    return grid


def _present_values(labels: np.ndarray) -> list[int]:
    lab = np.asarray(labels)
    if lab.size and lab.min() >= 0 and lab.max() < 1 << 16:
        return [int(v) for v in np.flatnonzero(np.bincount(lab.astype(np.int64).ravel())) if v != 0]
    return [int(v) for v in np.unique(lab) if v != 0]


def add_label_legend(
    fig: go.Figure, values, label_names: Mapping[int, str] | None = None, max_labels: int = 60
) -> go.Figure:
    """A legend under the panels (one entry per label value: its colour, value and name), drawn with
    empty marker traces, so the figure itself says which colour is which structure."""
    rows = label_legend_rows(values, label_names)[:max_labels]
    if rows:
        fig.update_traces(showlegend=False)  # the legend lists labels only
    for v, name, color in rows:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"{v} {name}",
                marker={"color": color, "size": 10, "symbol": "square"},
                showlegend=True,
                hoverinfo="skip",
            )
        )
    if rows:
        fig.update_layout(
            showlegend=True,
            legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0, "font": {"size": 11}},
        )
    return fig


def registration_panels(
    result,
    *,
    labels=None,
    show: Sequence[str] = ("fixed", "moving", "warped", "before", "after", "grid", "jacobian"),
    grid_step: int = 6,
    cols: int | None = None,
    height: int = 260,
    title: str = "",
    axis: int | None = None,
    index: int | None = None,
    label_names: Mapping[int, str] | None = None,
) -> go.Figure:
    """The usual pictures of one registration side by side: ``result`` is a ``RegistrationResult`` (fixed,
    moving on the fixed grid, warped, displacement ``(1, n, *S)`` voxels fixed -> moving).

    ``show`` picks and orders panels: fixed, moving, warped, before (moving - fixed), after (warped -
    fixed; both on one colour range), grid (deformation grid), jacobian (det J centred at 1, folds in
    their own colour), magnitude (|u| in mm). ``labels`` (fixed label map) are outlined on fixed and
    warped in the colour of each label value. 3D results are cut at ``index`` along ``axis``
    (default: the middle of the last axis).
    """
    from regcore.spatial.jacobian import jacobian_determinant

    fixed = as_array(result.fixed)
    ndim = fixed.ndim
    if ndim == 3:
        axis = 2 if axis is None else axis
        index = fixed.shape[axis] // 2 if index is None else index
    cut = (lambda a: a) if ndim == 2 else (lambda a: extract_slice(a, axis, index))
    flips = image_flips(result.fixed, axis)
    u = as_array(result.displacement)[0]
    f, m, w = (cut(as_array(x)) for x in (result.fixed, result.moving, result.warped))
    lab = cut(as_array(labels)) if labels is not None else None
    diff_limit = difference_limit(f, m, w)  # before and after on one colour range
    builders = {
        "fixed": lambda: image_figure(f, title="fixed", flips=flips, height=height),
        "moving": lambda: image_figure(m, title="moving", flips=flips, height=height),
        "warped": lambda: image_figure(w, title=f"warped ({result.method})", flips=flips, height=height),
        "before": lambda: difference_figure(
            f, m, title="moving - fixed", flips=flips, height=height, limit=diff_limit
        ),
        "after": lambda: difference_figure(
            f, w, title="warped - fixed", flips=flips, height=height, limit=diff_limit
        ),
        "grid": lambda: grid_overlay_figure(
            w,
            slice_field(u, axis, index) if ndim == 3 else u,
            step=grid_step,
            title="deformation grid",
            flips=flips,
            height=height,
        ),
        "jacobian": lambda: jacobian_figure(
            cut(jacobian_determinant(result.displacement.detach().cpu())[0]),
            title="det J",
            flips=flips,
            height=height,
        ),
        "magnitude": lambda: add_heat_overlay(
            image_figure(f, title="|u| (mm)", flips=flips, height=height),
            cut(magnitude(u, result.fixed.spacing)),
            name="|u| mm",
        ),
    }
    unknown = [s for s in show if s not in builders]
    if unknown:
        raise ValueError(f"show must name panels among {sorted(builders)}, got {unknown}")
    panels = []
    for name in show:
        fig = builders[name]()
        if lab is not None and name in ("fixed", "warped"):
            add_contours(fig, lab, label_names=label_names)
        panels.append(fig)
    grid = panel_grid(panels, cols=cols, height=None, title=title)
    if lab is not None and any(name in ("fixed", "warped") for name in show):
        add_label_legend(grid, _present_values(lab), label_names)
    return grid
