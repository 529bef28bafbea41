"""Plotly figure builders for registration results: pure functions -> ``go.Figure``.

Display convention (every 2D panel here): a slice ``a[i, j]`` of tensor axes (p, q) with
p < q is drawn with axis p horizontal (x = i) and axis q vertical (y = j), so a voxel
index ``(i, j)`` is plotted at ``(x=i, y=j)`` and a displacement ``(u_p, u_q)`` (voxels,
fixed -> moving) is an arrow ``(dx=u_p, dy=u_q)``. Orientation is handled by reversing
plot axes (:func:`display_flips`), never by flipping data, so overlays stay in voxel units.
Never imports streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
    "#e6beff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
    "#000075",
    "#808080",
)
FOLD_COLOR = "#ff2d55"


# -- array helpers --------------------------------------------------------------------------
def as_array(x) -> np.ndarray:
    """Image / tensor / array -> float numpy array; an Image gives its channel-0 ``(*S)``."""
    if hasattr(x, "geometry") and hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_2d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2D slice (H, W), got shape {a.shape}")
    return a


def auto_window(a: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """(level, width) covering the given intensity percentiles; width is never 0."""
    lo, hi = np.percentile(np.asarray(a, dtype=float), percentiles)
    width = float(hi - lo) or 1.0
    return float((lo + hi) / 2), width


def extract_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D slice of a ``(*S)`` array: 2D input is returned as is; 3D is cut at ``index`` on ``axis``."""
    volume = np.asarray(volume)
    if volume.ndim == 2:
        return volume
    if volume.ndim != 3:
        raise ValueError(f"volume must be 2D or 3D, got shape {volume.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(f"index must be in [0, {volume.shape[axis] - 1}] for axis {axis}, got {index}")
    return np.take(volume, index, axis=axis)


def slice_field(disp: np.ndarray, axis: int, index: int) -> np.ndarray:
    """In-plane components of a displacement ``(ndim, *S)`` at a slice -> ``(2, H, W)`` voxels."""
    disp = np.asarray(disp)
    if disp.ndim == 4 and disp.shape[0] == 1 and disp.shape[1] == 2:  # (1, 2, H, W)
        disp = disp[0]
    if disp.ndim == 5:
        disp = disp[0]
    if disp.shape[0] == 2 and disp.ndim == 3:
        return disp
    if disp.shape[0] != 3 or disp.ndim != 4:
        raise ValueError(f"disp must be (ndim, *S) with ndim 2 or 3, got shape {disp.shape}")
    keep = [a for a in range(3) if a != axis]
    return np.stack([extract_slice(disp[a], axis, index) for a in keep])


def slice_axes(ndim: int, axis: int | None) -> tuple[int, int]:
    """Tensor axes (p, q) shown horizontally and vertically: ``(0, 1)`` in 2D, the two axes other than ``axis`` in 3D."""
    if ndim == 2:
        return 0, 1
    if ndim != 3 or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 for a 3D volume, got ndim={ndim}, axis={axis}")
    p, q = (a for a in range(3) if a != axis)
    return p, q


def points_in_slice(
    index_points: np.ndarray, axis: int | None, index: int | None, tol: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel points ``(N, ndim)`` -> in-plane coordinates ``(M, 2)`` of those within ``tol`` voxels of
    the slice, and the ``(N,)`` boolean mask of which were kept. 2D points are all kept."""
    pts = np.asarray(index_points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"index_points must be (N, 2) or (N, 3), got shape {pts.shape}")
    if pts.shape[1] == 2:
        return pts, np.ones(len(pts), bool)
    keep = np.abs(pts[:, axis] - index) <= tol
    return pts[keep][:, list(slice_axes(3, axis))], keep


def display_flips(codes: str | None, axes: tuple[int, int] = (0, 1)) -> tuple[bool, bool]:
    """(reverse_x, reverse_y) so patient Left is on the right (radiological), and A/S point up.

    ``codes`` is ``Geometry.orientation_codes()`` (letter = where each tensor axis points).
    """
    if not codes:
        return False, False
    hx, vy = codes[axes[0]], codes[axes[1]]
    return hx in ("R", "A"), vy in ("P", "I")


def checkerboard(fixed: np.ndarray, moving: np.ndarray, tile: int) -> np.ndarray:
    """Alternate ``tile``-voxel squares (cubes in 3D) of fixed and moving: the one checkerboard composite.

    ``fixed`` and ``moving`` have the same shape, any number of dims (arrays, tensors or Images via
    :func:`as_array`); the tile at the origin is fixed. Returns a numpy array of that shape. Normalise
    both first (:func:`normalise01`) when their intensity ranges differ.
    """
    fixed, moving = as_array(fixed), as_array(moving)
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must have the same shape")
    if int(tile) < 1:
        raise ValueError(f"tile must be >= 1 voxel, got {tile}")
    idx = np.indices(fixed.shape) // int(tile)
    mask = idx.sum(0) % 2 == 0
    return np.where(mask, fixed, moving)


def normalise01(a: np.ndarray, level: float | None = None, width: float | None = None) -> np.ndarray:
    """Window (level, width) then scale to [0, 1]; auto window when not given."""
    a = np.asarray(a, dtype=float)
    if level is None or width is None:
        level, width = auto_window(a)
    lo = level - width / 2
    return np.clip((a - lo) / max(width, 1e-12), 0, 1)


# -- base panels ------------------------------------------------------------------------------
def _panel_layout(shape: tuple[int, int], title: str, flips: tuple[bool, bool], height: int) -> dict:
    """Layout dict of an image panel (built once: plotly validates a whole dict faster than updates)."""
    w, h = shape  # axis p size (x), axis q size (y)
    return {
        "title": {"text": title, "x": 0.5, "font": {"size": 13}} if title else None,
        "height": height,
        "margin": {"l": 4, "r": 4, "t": 30 if title else 4, "b": 4},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#000",
        "showlegend": False,
        "dragmode": "pan",
        "uirevision": "keep",
        "xaxis": {
            "visible": False,
            "range": [w - 0.5, -0.5] if flips[0] else [-0.5, w - 0.5],
            "constrain": "domain",
        },
        "yaxis": {
            "visible": False,
            "range": [h - 0.5, -0.5] if flips[1] else [-0.5, h - 0.5],
            "scaleanchor": "x",
            "scaleratio": 1,
            "constrain": "domain",
        },
    }


def image_figure(
    a: np.ndarray,
    *,
    title: str = "",
    level: float | None = None,
    width: float | None = None,
    colorscale: str | list = "gray",
    flips: tuple[bool, bool] = (False, False),
    height: int = 360,
    zmid: float | None = None,
    showscale: bool = False,
    zmin=None,
    zmax=None,
    hover_name: str = "value",
) -> go.Figure:
    """Grey-scale (or colour-mapped) 2D slice ``a[i, j]`` with i horizontal, j vertical."""
    a = _check_2d("a", as_array(a)).astype(float)
    if zmin is None and zmax is None and zmid is None:
        if level is None or width is None:
            level, width = auto_window(a)
        zmin, zmax = level - width / 2, level + width / 2
    trace = {
        "type": "heatmap",
        "z": a.T,
        "colorscale": colorscale,
        "zmin": zmin,
        "zmax": zmax,
        "zmid": zmid,
        "showscale": showscale,
        "hovertemplate": f"x=%{{x}} y=%{{y}}<br>{hover_name}=%{{z:.3g}}<extra></extra>",
    }
    return go.Figure({"data": [trace], "layout": _panel_layout(a.shape, title, flips, height)})


def add_label_overlay(
    fig: go.Figure, labels: np.ndarray, label_names: Mapping[int, str] | None = None, opacity: float = 0.45
) -> go.Figure:
    """Colour label map ``(H, W)`` over a panel; hover shows the structure name; 0 is transparent."""
    lab = _check_2d("labels", as_array(labels)).astype(int)
    values = [v for v in np.unique(lab) if v != 0]
    if not values:
        return fig
    index = np.full(lab.shape, np.nan)
    names = np.full(lab.shape, "", dtype=object)
    for k, v in enumerate(values):
        m = lab == v
        index[m] = k % len(PALETTE)
        names[m] = (label_names or {}).get(int(v), f"label {v}")
    n = len(PALETTE)
    scale = []
    for k, c in enumerate(PALETTE):
        scale += [[k / n, c], [(k + 1) / n, c]]
    fig.add_trace(
        go.Heatmap(
            z=index.T,
            customdata=names.T,
            colorscale=scale,
            zmin=0,
            zmax=n,
            showscale=False,
            opacity=opacity,
            hoverongaps=False,
            hovertemplate="%{customdata}<extra></extra>",
        )
    )
    return fig


def add_contours(
    fig: go.Figure,
    labels: np.ndarray,
    *,
    color: str = "#00e5ff",
    dash: str = "solid",
    name: str = "",
    max_labels: int = 40,
) -> go.Figure:
    """Outline each structure of a label map ``(H, W)`` (skimage marching squares at 0.5)."""
    from skimage.measure import find_contours

    lab = _check_2d("labels", as_array(labels)).astype(int)
    xs: list[float] = []
    ys: list[float] = []
    for v in [v for v in np.unique(lab) if v != 0][:max_labels]:
        for c in find_contours((lab == v).astype(float), 0.5):
            xs += list(c[:, 0]) + [None]
            ys += list(c[:, 1]) + [None]
    if xs:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=name,
                hoverinfo="skip",
                line={"color": color, "width": 1.3, "dash": dash},
            )
        )
    return fig


def add_points(
    fig: go.Figure,
    points: np.ndarray,
    *,
    color: str = "#ffd60a",
    name: str = "landmarks",
    ids: Sequence[str] | None = None,
    symbol: str = "circle",
) -> go.Figure:
    """Scatter ``(N, 2)`` points given in slice voxel coordinates (x = axis p, y = axis q)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    fig.add_trace(
        go.Scatter(
            x=pts[:, 0],
            y=pts[:, 1],
            mode="markers",
            name=name,
            text=list(ids) if ids is not None else None,
            marker={"color": color, "size": 8, "symbol": symbol, "line": {"color": "#000", "width": 1}},
            hovertemplate="%{text}<extra>" + name + "</extra>",
        )
    )
    return fig


# -- comparison panels ------------------------------------------------------------------------
def slice_figure(
    image: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_names=None,
    points: np.ndarray | None = None,
    point_ids=None,
    title: str = "",
    level=None,
    width=None,
    flips=(False, False),
    height: int = 360,
    label_opacity: float = 0.35,
) -> go.Figure:
    """One viewer panel: image, optional label overlay with names, optional landmarks."""
    fig = image_figure(image, title=title, level=level, width=width, flips=flips, height=height)
    if labels is not None:
        add_label_overlay(fig, labels, label_names, label_opacity)
    if points is not None and len(points):
        add_points(fig, points, ids=point_ids)
    return fig


def checkerboard_figure(
    fixed: np.ndarray,
    moving: np.ndarray,
    tile: int = 16,
    *,
    title: str = "Checkerboard",
    flips=(False, False),
    height: int = 360,
) -> go.Figure:
    """Checkerboard of fixed/moving, each normalised to [0, 1] first so tiles are comparable."""
    f, m = normalise01(as_array(fixed)), normalise01(as_array(moving))
    return image_figure(checkerboard(f, m, tile), title=title, zmin=0, zmax=1, flips=flips, height=height)


def blend_figure(
    fixed: np.ndarray,
    moving: np.ndarray,
    alpha: float = 0.5,
    *,
    title: str = "Blend",
    flips=(False, False),
    height: int = 360,
) -> go.Figure:
    """``(1 - alpha) * fixed + alpha * moving`` after normalising both to [0, 1]."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    f, m = normalise01(as_array(fixed)), normalise01(as_array(moving))
    return image_figure((1 - alpha) * f + alpha * m, title=title, zmin=0, zmax=1, flips=flips, height=height)


def difference_figure(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    title: str = "Difference (moving - fixed)",
    flips=(False, False),
    height: int = 360,
) -> go.Figure:
    """Signed difference of the [0, 1]-normalised images on a diverging scale centred at 0."""
    d = normalise01(as_array(moving)) - normalise01(as_array(fixed))
    lim = float(np.abs(d).max()) or 1.0
    return image_figure(
        d,
        title=title,
        colorscale="RdBu_r",
        zmin=-lim,
        zmax=lim,
        flips=flips,
        height=height,
        showscale=True,
        hover_name="difference",
    )


def flicker_figure(
    a: np.ndarray,
    b: np.ndarray,
    *,
    names: tuple[str, str] = ("fixed", "warped"),
    flips=(False, False),
    height: int = 360,
    frames: int = 12,
    duration_ms: int = 450,
) -> go.Figure:
    """Two-frame animation alternating ``a`` and ``b`` (both normalised to [0, 1]); press Flicker to play."""
    fa, fb = normalise01(as_array(a)), normalise01(as_array(b))
    if fa.shape != fb.shape:
        raise ValueError(f"a {fa.shape} and b {fb.shape} must have the same shape")
    fig = image_figure(fa, zmin=0, zmax=1, flips=flips, height=height, title=names[0])
    fig.frames = [
        go.Frame(
            data=[go.Heatmap(z=(fa if k % 2 == 0 else fb).T)],
            name=str(k),
            layout=go.Layout(title_text=names[k % 2]),
        )
        for k in range(frames)
    ]
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "showactive": False,
                "x": 0.02,
                "y": 0.02,
                "xanchor": "left",
                "buttons": [
                    {
                        "label": "Flicker",
                        "method": "animate",
                        "args": [
                            None,
                            {
                                "frame": {"duration": duration_ms, "redraw": True},
                                "transition": {"duration": 0},
                            },
                        ],
                    }
                ],
            }
        ]
    )
    return fig


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
    """Arrows from each sampled fixed voxel x to x + scale * u(x); colour = |u| in voxels."""
    u = np.asarray(disp2d, dtype=float)
    if u.ndim != 3 or u.shape[0] != 2:
        raise ValueError(f"disp2d must be (2, H, W), got shape {u.shape}")
    fig = image_figure(image, title=title, flips=flips, height=height)
    h, w = u.shape[1:]
    ii, jj = np.meshgrid(np.arange(0, h, step), np.arange(0, w, step), indexing="ij")
    du, dv = u[0][ii, jj] * scale, u[1][ii, jj] * scale
    xs, ys = [], []
    for x0, y0, a, b in zip(ii.ravel(), jj.ravel(), du.ravel(), dv.ravel()):
        xs += [x0, x0 + a, None]
        ys += [y0, y0 + b, None]
    mag = np.hypot(du, dv).ravel()
    fig.add_trace(
        go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#00e5ff", "width": 1.5}, hoverinfo="skip")
    )
    fig.add_trace(
        go.Scatter(
            x=(ii + du).ravel(),
            y=(jj + dv).ravel(),
            mode="markers",
            marker={"size": 4, "color": mag, "colorscale": "Turbo"},
            hovertemplate="|u|=%{marker.color:.2f} vox<extra></extra>",
        )
    )
    return fig


def jacobian_figure(
    jac2d: np.ndarray, *, title: str = "Jacobian determinant", flips=(False, False), height: int = 360
) -> go.Figure:
    """det(J) on a diverging scale centred at 1 (blue shrink, red grow); folded voxels (<= 0) outlined."""
    j = _check_2d("jac2d", as_array(jac2d)).astype(float)
    lim = max(float(np.abs(j - 1).max()), 0.05)
    fig = image_figure(
        j,
        title=title,
        colorscale="RdBu_r",
        zmin=1 - lim,
        zmax=1 + lim,
        flips=flips,
        height=height,
        showscale=True,
        hover_name="det J",
    )
    folded = np.argwhere(j <= 0)
    if len(folded):
        fig.add_trace(
            go.Scatter(
                x=folded[:, 0],
                y=folded[:, 1],
                mode="markers",
                name="folded",
                marker={"symbol": "square-open", "size": 6, "color": FOLD_COLOR},
                hovertemplate="folded voxel<extra></extra>",
            )
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


# -- charts -----------------------------------------------------------------------------------
def _chart_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "font": {"size": 14}},
        height=height,
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def metric_bar_figure(
    values: Mapping[str, Mapping[str, float]], *, title: str = "Dice per structure", height: int = 380
) -> go.Figure:
    """Grouped bars: ``values[run][structure] -> value`` (one colour per run)."""
    if not values:
        raise ValueError("values must contain at least one run")
    fig = go.Figure()
    for k, (run, per) in enumerate(values.items()):
        fig.add_trace(
            go.Bar(
                name=str(run),
                x=list(per.keys()),
                y=list(per.values()),
                marker_color=PALETTE[k % len(PALETTE)],
            )
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(tickangle=-45, automargin=True)
    return _chart_layout(fig, title, height)


def metric_box_figure(
    values: Mapping[str, Sequence[float]], *, title: str = "Dice distribution", height: int = 380
) -> go.Figure:
    """One box (with points) per run over its per-structure values."""
    if not values:
        raise ValueError("values must contain at least one run")
    fig = go.Figure()
    for k, (run, vals) in enumerate(values.items()):
        fig.add_trace(
            go.Box(
                y=list(vals),
                name=str(run),
                boxpoints="all",
                jitter=0.3,
                marker_color=PALETTE[k % len(PALETTE)],
            )
        )
    return _chart_layout(fig, title, height)


def loss_curve_figure(
    history: Sequence[Mapping[str, float]], *, title: str = "Loss", height: int = 260
) -> go.Figure:
    """One line per loss term over iterations (``history[i][term]``)."""
    fig = go.Figure()
    keys = sorted({k for h in history for k in h})
    for k, key in enumerate(keys):
        fig.add_trace(
            go.Scatter(
                y=[h.get(key) for h in history],
                mode="lines",
                name=key,
                line={"color": PALETTE[k % len(PALETTE)]},
            )
        )
    return _chart_layout(fig, title, height)


def line_figure(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    height: int = 320,
    markers: bool = False,
) -> go.Figure:
    """Simple multi-line chart used by the concept labs (e.g. similarity vs translation)."""
    fig = go.Figure()
    for k, (name, ys) in enumerate(series.items()):
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(ys),
                mode="lines+markers" if markers else "lines",
                name=name,
                line={"color": PALETTE[k % len(PALETTE)], "width": 2},
            )
        )
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return _chart_layout(fig, title, height)


# -- several panels, 3D slices, overlays (notebooks and the 3D-view fallback) ---------------------
def image_flips(image, axis: int | None = None) -> tuple[bool, bool]:
    """:func:`display_flips` for an Image's orientation on the plane shown (2D, or 3D cut along ``axis``);
    ``(False, False)`` for arrays and tensors, which carry no orientation."""
    geometry = getattr(image, "geometry", None)
    if geometry is None:
        return False, False
    return display_flips(geometry.orientation_codes(), slice_axes(geometry.ndim, axis))


def magnitude(disp, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Length of a displacement per voxel: ``disp`` ``(ndim, *S)`` or ``(1, ndim, *S)`` in voxels ->
    ``(*S)`` in voxels, or in mm when ``spacing`` (mm per voxel along each axis) is given."""
    u = as_array(disp).astype(float)
    if u.ndim >= 3 and u.shape[0] == 1 and u.shape[1] == u.ndim - 2:
        u = u[0]
    if u.shape[0] != u.ndim - 1 or u.shape[0] not in (2, 3):
        raise ValueError(f"disp must be (ndim, *S) or (1, ndim, *S) with ndim 2 or 3, got shape {u.shape}")
    if spacing is not None:
        if len(spacing) != u.shape[0]:
            raise ValueError(f"spacing must have {u.shape[0]} entries (one per axis), got {tuple(spacing)}")
        u = u * np.asarray(spacing, float).reshape(-1, *([1] * (u.ndim - 1)))
    return np.sqrt((u**2).sum(0))


def add_heat_overlay(
    fig: go.Figure,
    values: np.ndarray,
    *,
    colorscale: str = "Hot",
    zmin: float | None = None,
    zmax: float | None = None,
    threshold: float | None = 0.0,
    opacity: float = 0.6,
    name: str = "value",
    showscale: bool = True,
) -> go.Figure:
    """Colour map of a scalar slice ``(H, W)`` (an error, |u|, a variance) over a panel; values at or below
    ``threshold`` stay transparent (None = draw everything)."""
    v = _check_2d("values", as_array(values)).astype(float)
    shown = np.where(v > threshold, v, np.nan) if threshold is not None else v
    fig.add_trace(
        go.Heatmap(
            z=shown.T,
            colorscale=colorscale,
            zmin=zmin if zmin is not None else float(np.nanmin(v)),
            zmax=zmax if zmax is not None else float(np.nanmax(v)),
            opacity=opacity,
            showscale=showscale,
            hoverongaps=False,
            hovertemplate=f"x=%{{x}} y=%{{y}}<br>{name}=%{{z:.3g}}<extra></extra>",
        )
    )
    return fig


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
        margin={"l": 4, "r": 4, "t": 50 if title else 30, "b": 4},
        plot_bgcolor="#000",
        paper_bgcolor="rgba(0,0,0,0)",
        dragmode="pan",
        title={"text": title, "x": 0.5} if title else None,
    )
    grid.update_annotations(font_size=12)
    return grid


def plane_name(codes: str | None, axis: int) -> str:
    """ "axial", "coronal" or "sagittal" for the plane cut along tensor ``axis`` (from orientation codes)."""
    letter = (codes or "   ")[axis]
    return {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}.get(
        letter, f"axis {axis}"
    )


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
    return panel_grid(panels, height=height, title=title)


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
) -> go.Figure:
    """The usual pictures of one registration side by side: ``result`` is a ``RegistrationResult`` (fixed,
    moving on the fixed grid, warped, displacement ``(1, n, *S)`` voxels fixed -> moving).

    ``show`` picks and orders panels: fixed, moving, warped, before (moving - fixed), after (warped -
    fixed), grid (deformation grid), jacobian (det J, folds marked), magnitude (|u| in mm). ``labels``
    (fixed label map) are outlined on fixed and warped. 3D results are cut at ``index`` along ``axis``
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
    builders = {
        "fixed": lambda: image_figure(f, title="fixed", flips=flips, height=height),
        "moving": lambda: image_figure(m, title="moving", flips=flips, height=height),
        "warped": lambda: image_figure(w, title=f"warped ({result.method})", flips=flips, height=height),
        "before": lambda: difference_figure(f, m, title="moving - fixed", flips=flips, height=height),
        "after": lambda: difference_figure(f, w, title="warped - fixed", flips=flips, height=height),
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
            add_contours(fig, lab)
        panels.append(fig)
    return panel_grid(panels, cols=cols, height=None, title=title)
