"""Deformation figures: grid, arrows, Jacobian determinant, landmark errors.

Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from regcore.viz.colors import detj_scale
from regcore.viz.panels import add_points, image_figure
from regcore.viz.slices import _check_2d, as_array


def grid_overlay_figure(
    image: np.ndarray,
    disp2d: np.ndarray,
    *,
    step: int = 8,
    title: str = "Deformation grid",
    flips=(False, False),
    height: int = 360,
    color: str = "#ffd60a",
) -> go.Figure:
    """Grid lines of the fixed grid carried by phi = x + u (``disp2d`` (2, H, W) voxels) over the image."""
    u = np.asarray(disp2d, dtype=float)
    if u.ndim != 3 or u.shape[0] != 2:
        raise ValueError(f"disp2d must be (2, H, W), got shape {u.shape}")
    if int(step) < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    fig = image_figure(image, title=title, flips=flips, height=height)
    h, w = u.shape[1:]
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    px, py = ii + u[0], jj + u[1]
    xs: list = []
    ys: list = []
    for i in range(0, h, step):
        xs += list(px[i, :]) + [None]
        ys += list(py[i, :]) + [None]
    for j in range(0, w, step):
        xs += list(px[:, j]) + [None]
        ys += list(py[:, j]) + [None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": color, "width": 1}, hoverinfo="skip"))
    return fig


def default_step(shape: tuple[int, ...], lines: int = 16) -> int:
    """Spacing in voxels that draws about ``lines`` grid lines (or arrows) across the longest side of a 2D
    slice of ``shape``, so a 900-px histology image gets a readable grid, not a solid mesh."""
    return max(2, round(max(shape) / lines))


def quiver_figure(
    image: np.ndarray,
    disp2d: np.ndarray,
    *,
    step: int = 8,
    scale: float = 1.0,
    title: str = "Displacement (voxels)",
    flips=(False, False),
    height: int = 360,
) -> go.Figure:
    """Arrows from each sampled fixed voxel x to x + scale * u(x) (``disp2d`` (2, H, W) voxels, fixed ->
    moving), with arrowheads; colour = |u| in voxels (unscaled) with a colour bar."""
    u = np.asarray(disp2d, dtype=float)
    if u.ndim != 3 or u.shape[0] != 2:
        raise ValueError(f"disp2d must be (2, H, W), got shape {u.shape}")
    if int(step) < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    fig = image_figure(image, title=title, flips=flips, height=height)
    h, w = u.shape[1:]
    ii, jj = np.meshgrid(np.arange(0, h, step), np.arange(0, w, step), indexing="ij")
    du, dv = u[0][ii, jj], u[1][ii, jj]
    mag = np.hypot(du, dv).ravel()
    xs: list = []
    ys: list = []
    sizes: list = []
    colors: list = []
    for x0, y0, a, b, m in zip(ii.ravel(), jj.ravel(), du.ravel() * scale, dv.ravel() * scale, mag):
        xs += [x0, x0 + a, None]
        ys += [y0, y0 + b, None]
        sizes += [0, 9 if m > 0.05 else 0, 0]  # no arrowhead where nothing moves
        colors += [m, m, m]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            line={"color": "rgba(0, 229, 255, 0.75)", "width": 1.5},
            marker={
                "symbol": "arrow",
                "angleref": "previous",
                "size": sizes,
                "color": colors,
                "colorscale": "Turbo",
                "cmin": 0.0,
                "cmax": float(mag.max()) if mag.size and mag.max() > 0 else 1.0,
                "colorbar": {"title": {"text": "|u| (voxels)"}, "thickness": 12},
            },
            hoverinfo="skip",
            showlegend=False,
        )
    )
    return fig


def jacobian_figure(
    jac2d: np.ndarray,
    *,
    title: str = "Jacobian determinant",
    flips=(False, False),
    height: int = 360,
    limit: float | None = None,
) -> go.Figure:
    """det J ``(H, W)`` on a diverging scale symmetric in log2(det J) and centred at det J = 1 (white):
    blue = shrinkage (< 1), red = growth (> 1); folded voxels (det J <= 0) are filled with
    :data:`~regcore.viz.colors.FOLD_COLOR`, a colour nothing else uses, which has its own band at the
    bottom of the titled colour bar. ``limit``: colour range in log2 units (see
    :func:`~regcore.viz.colors.detj_scale`; pass one value to panels compared side by side).
    Hover shows the real det J.
    """
    j = _check_2d("jac2d", as_array(jac2d)).astype(float)
    scale = detj_scale(j, limit=limit)
    fig = image_figure(
        scale.z,
        title=title,
        colorscale=scale.colorscale,
        zmin=scale.zmin,
        zmax=scale.zmax,
        flips=flips,
        height=height,
        showscale=True,
        hover_name="det J",
        colorbar={"tickvals": scale.tickvals, "ticktext": scale.ticktext},
    )
    fig.data[0].update(
        customdata=j.T, hovertemplate="x=%{x} y=%{y}<br>det J=%{customdata:.3g}<extra></extra>"
    )
    return fig


def landmark_tre_figure(
    image: np.ndarray,
    fixed_pts: np.ndarray,
    moving_pts: np.ndarray,
    *,
    ids: Sequence[str] | None = None,
    title: str = "Landmarks and TRE",
    flips=(False, False),
    height: int = 360,
) -> go.Figure:
    """Fixed landmarks (circles) with an arrow to where the registration maps them (crosses).

    Both ``(N, 2)`` in slice voxel coordinates; the arrow length is the in-plane residual error.
    """
    f = np.asarray(fixed_pts, dtype=float).reshape(-1, 2)
    m = np.asarray(moving_pts, dtype=float).reshape(-1, 2)
    if f.shape != m.shape:
        raise ValueError(f"fixed_pts {f.shape} and moving_pts {m.shape} must match")
    fig = image_figure(image, title=title, flips=flips, height=height)
    xs, ys = [], []
    for a, b in zip(f, m):
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
    fig.add_trace(
        go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#ff9f1c", "width": 2}, hoverinfo="skip")
    )
    add_points(fig, f, ids=ids, name="fixed", color="#ffd60a")
    add_points(fig, m, ids=ids, name="mapped", color="#ff2d55", symbol="x")
    return fig
