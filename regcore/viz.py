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

PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
           "#808000", "#ffd8b1", "#000075", "#808080")
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
    if disp.ndim == 4 and disp.shape[0] == 1 and disp.shape[1] == 2:   # (1, 2, H, W)
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


def points_in_slice(index_points: np.ndarray, axis: int | None, index: int | None,
                    tol: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
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
        "height": height, "margin": {"l": 4, "r": 4, "t": 30 if title else 4, "b": 4},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#000", "showlegend": False,
        "dragmode": "pan", "uirevision": "keep",
        "xaxis": {"visible": False, "range": [w - 0.5, -0.5] if flips[0] else [-0.5, w - 0.5], "constrain": "domain"},
        "yaxis": {"visible": False, "range": [h - 0.5, -0.5] if flips[1] else [-0.5, h - 0.5],
                  "scaleanchor": "x", "scaleratio": 1, "constrain": "domain"},
    }


def image_figure(a: np.ndarray, *, title: str = "", level: float | None = None, width: float | None = None,
                 colorscale: str | list = "gray", flips: tuple[bool, bool] = (False, False), height: int = 360,
                 zmid: float | None = None, showscale: bool = False, zmin=None, zmax=None,
                 hover_name: str = "value") -> go.Figure:
    """Grey-scale (or colour-mapped) 2D slice ``a[i, j]`` with i horizontal, j vertical."""
    a = _check_2d("a", as_array(a)).astype(float)
    if zmin is None and zmax is None and zmid is None:
        if level is None or width is None:
            level, width = auto_window(a)
        zmin, zmax = level - width / 2, level + width / 2
    trace = {"type": "heatmap", "z": a.T, "colorscale": colorscale, "zmin": zmin, "zmax": zmax, "zmid": zmid,
             "showscale": showscale, "hovertemplate": f"x=%{{x}} y=%{{y}}<br>{hover_name}=%{{z:.3g}}<extra></extra>"}
    return go.Figure({"data": [trace], "layout": _panel_layout(a.shape, title, flips, height)})


def add_label_overlay(fig: go.Figure, labels: np.ndarray, label_names: Mapping[int, str] | None = None,
                      opacity: float = 0.45) -> go.Figure:
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
    fig.add_trace(go.Heatmap(z=index.T, customdata=names.T, colorscale=scale, zmin=0, zmax=n, showscale=False,
                             opacity=opacity, hoverongaps=False,
                             hovertemplate="%{customdata}<extra></extra>"))
    return fig


def add_contours(fig: go.Figure, labels: np.ndarray, *, color: str = "#00e5ff", dash: str = "solid",
                 name: str = "", max_labels: int = 40) -> go.Figure:
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
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, hoverinfo="skip",
                                   line={"color": color, "width": 1.3, "dash": dash}))
    return fig


def add_points(fig: go.Figure, points: np.ndarray, *, color: str = "#ffd60a", name: str = "landmarks",
               ids: Sequence[str] | None = None, symbol: str = "circle") -> go.Figure:
    """Scatter ``(N, 2)`` points given in slice voxel coordinates (x = axis p, y = axis q)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=name,
                             text=list(ids) if ids is not None else None,
                             marker={"color": color, "size": 8, "symbol": symbol, "line": {"color": "#000", "width": 1}},
                             hovertemplate="%{text}<extra>" + name + "</extra>"))
    return fig


# -- comparison panels ------------------------------------------------------------------------
def slice_figure(image: np.ndarray, *, labels: np.ndarray | None = None, label_names=None,
                 points: np.ndarray | None = None, point_ids=None, title: str = "", level=None, width=None,
                 flips=(False, False), height: int = 360, label_opacity: float = 0.35) -> go.Figure:
    """One viewer panel: image, optional label overlay with names, optional landmarks."""
    fig = image_figure(image, title=title, level=level, width=width, flips=flips, height=height)
    if labels is not None:
        add_label_overlay(fig, labels, label_names, label_opacity)
    if points is not None and len(points):
        add_points(fig, points, ids=point_ids)
    return fig


def checkerboard_figure(fixed: np.ndarray, moving: np.ndarray, tile: int = 16, *, title: str = "Checkerboard",
                        flips=(False, False), height: int = 360) -> go.Figure:
    """Checkerboard of fixed/moving, each normalised to [0, 1] first so tiles are comparable."""
    f, m = normalise01(as_array(fixed)), normalise01(as_array(moving))
    return image_figure(checkerboard(f, m, tile), title=title, zmin=0, zmax=1, flips=flips, height=height)


def blend_figure(fixed: np.ndarray, moving: np.ndarray, alpha: float = 0.5, *, title: str = "Blend",
                 flips=(False, False), height: int = 360) -> go.Figure:
    """``(1 - alpha) * fixed + alpha * moving`` after normalising both to [0, 1]."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    f, m = normalise01(as_array(fixed)), normalise01(as_array(moving))
    return image_figure((1 - alpha) * f + alpha * m, title=title, zmin=0, zmax=1, flips=flips, height=height)


def difference_figure(fixed: np.ndarray, moving: np.ndarray, *, title: str = "Difference (moving - fixed)",
                      flips=(False, False), height: int = 360) -> go.Figure:
    """Signed difference of the [0, 1]-normalised images on a diverging scale centred at 0."""
    d = normalise01(as_array(moving)) - normalise01(as_array(fixed))
    lim = float(np.abs(d).max()) or 1.0
    return image_figure(d, title=title, colorscale="RdBu_r", zmin=-lim, zmax=lim, flips=flips, height=height,
                        showscale=True, hover_name="difference")


def flicker_figure(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str] = ("fixed", "warped"),
                   flips=(False, False), height: int = 360, frames: int = 12, duration_ms: int = 450) -> go.Figure:
    """Two-frame animation alternating ``a`` and ``b`` (both normalised to [0, 1]); press Flicker to play."""
    fa, fb = normalise01(as_array(a)), normalise01(as_array(b))
    if fa.shape != fb.shape:
        raise ValueError(f"a {fa.shape} and b {fb.shape} must have the same shape")
    fig = image_figure(fa, zmin=0, zmax=1, flips=flips, height=height, title=names[0])
    fig.frames = [go.Frame(data=[go.Heatmap(z=(fa if k % 2 == 0 else fb).T)], name=str(k),
                           layout=go.Layout(title_text=names[k % 2])) for k in range(frames)]
    fig.update_layout(updatemenus=[{"type": "buttons", "showactive": False, "x": 0.02, "y": 0.02, "xanchor": "left",
                                    "buttons": [{"label": "Flicker", "method": "animate",
                                                 "args": [None, {"frame": {"duration": duration_ms, "redraw": True},
                                                                 "transition": {"duration": 0}}]}]}])
    return fig


def grid_overlay_figure(image: np.ndarray, disp2d: np.ndarray, *, step: int = 8, title: str = "Deformation grid",
                        flips=(False, False), height: int = 360, color: str = "#ffd60a") -> go.Figure:
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


def quiver_figure(image: np.ndarray, disp2d: np.ndarray, *, step: int = 8, scale: float = 1.0,
                  title: str = "Displacement (voxels)", flips=(False, False), height: int = 360) -> go.Figure:
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
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#00e5ff", "width": 1.5}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=(ii + du).ravel(), y=(jj + dv).ravel(), mode="markers",
                               marker={"size": 4, "color": mag, "colorscale": "Turbo"},
                               hovertemplate="|u|=%{marker.color:.2f} vox<extra></extra>"))
    return fig


def jacobian_figure(jac2d: np.ndarray, *, title: str = "Jacobian determinant", flips=(False, False),
                    height: int = 360) -> go.Figure:
    """det(J) on a diverging scale centred at 1 (blue shrink, red grow); folded voxels (<= 0) outlined."""
    j = _check_2d("jac2d", as_array(jac2d)).astype(float)
    lim = max(float(np.abs(j - 1).max()), 0.05)
    fig = image_figure(j, title=title, colorscale="RdBu_r", zmin=1 - lim, zmax=1 + lim, flips=flips,
                       height=height, showscale=True, hover_name="det J")
    folded = np.argwhere(j <= 0)
    if len(folded):
        fig.add_trace(go.Scatter(x=folded[:, 0], y=folded[:, 1], mode="markers", name="folded",
                                   marker={"symbol": "square-open", "size": 6, "color": FOLD_COLOR},
                                   hovertemplate="folded voxel<extra></extra>"))
    return fig


def landmark_tre_figure(image: np.ndarray, fixed_pts: np.ndarray, moving_pts: np.ndarray, *,
                        ids: Sequence[str] | None = None, title: str = "Landmarks and TRE",
                        flips=(False, False), height: int = 360) -> go.Figure:
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
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#ff9f1c", "width": 2}, hoverinfo="skip"))
    add_points(fig, f, ids=ids, name="fixed", color="#ffd60a")
    add_points(fig, m, ids=ids, name="mapped", color="#ff2d55", symbol="x")
    return fig


# -- charts -----------------------------------------------------------------------------------
def _chart_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.0, "font": {"size": 14}}, height=height, template="plotly_white",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig


def metric_bar_figure(values: Mapping[str, Mapping[str, float]], *, title: str = "Dice per structure",
                      height: int = 380) -> go.Figure:
    """Grouped bars: ``values[run][structure] -> value`` (one colour per run)."""
    if not values:
        raise ValueError("values must contain at least one run")
    fig = go.Figure()
    for k, (run, per) in enumerate(values.items()):
        fig.add_trace(go.Bar(name=str(run), x=list(per.keys()), y=list(per.values()),
                             marker_color=PALETTE[k % len(PALETTE)]))
    fig.update_layout(barmode="group")
    fig.update_xaxes(tickangle=-45, automargin=True)
    return _chart_layout(fig, title, height)


def metric_box_figure(values: Mapping[str, Sequence[float]], *, title: str = "Dice distribution",
                      height: int = 380) -> go.Figure:
    """One box (with points) per run over its per-structure values."""
    if not values:
        raise ValueError("values must contain at least one run")
    fig = go.Figure()
    for k, (run, vals) in enumerate(values.items()):
        fig.add_trace(go.Box(y=list(vals), name=str(run), boxpoints="all", jitter=0.3,
                             marker_color=PALETTE[k % len(PALETTE)]))
    return _chart_layout(fig, title, height)


def loss_curve_figure(history: Sequence[Mapping[str, float]], *, title: str = "Loss", height: int = 260) -> go.Figure:
    """One line per loss term over iterations (``history[i][term]``)."""
    fig = go.Figure()
    keys = sorted({k for h in history for k in h})
    for k, key in enumerate(keys):
        fig.add_trace(go.Scatter(y=[h.get(key) for h in history], mode="lines", name=key,
                                 line={"color": PALETTE[k % len(PALETTE)]}))
    return _chart_layout(fig, title, height)


def line_figure(x: Sequence[float], series: Mapping[str, Sequence[float]], *, title: str = "", x_title: str = "",
                y_title: str = "", height: int = 320, markers: bool = False) -> go.Figure:
    """Simple multi-line chart used by the concept labs (e.g. similarity vs translation)."""
    fig = go.Figure()
    for k, (name, ys) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), mode="lines+markers" if markers else "lines", name=name,
                                 line={"color": PALETTE[k % len(PALETTE)], "width": 2}))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return _chart_layout(fig, title, height)
