"""One image panel and what is drawn over it: labels, contours, points, heat maps.

Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from regcore.viz.colors import PALETTE, label_color, label_index, palette_colorscale
from regcore.viz.slices import _check_2d, as_array, auto_window


def _panel_layout(shape: tuple[int, int], title: str, flips: tuple[bool, bool], height: int) -> dict:
    """Layout dict of an image panel (built once: plotly validates a whole dict faster than updates)."""
    w, h = shape  # axis p size (x), axis q size (y)
    return {
        "title": {"text": title, "x": 0.5, "font": {"size": 13}} if title else None,
        "height": height,
        # pad 0: Streamlit's theme pads the plot area by 8 px, a black plot-background frame around the image
        "margin": {"l": 4, "r": 4, "t": 30 if title else 4, "b": 4, "pad": 0},
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
    colorbar: dict | None = None,
) -> go.Figure:
    """Grey-scale (or colour-mapped) 2D slice ``a[i, j]`` with i horizontal, j vertical.

    With ``showscale`` the colour bar is titled ``hover_name``; ``colorbar`` adds plotly colour-bar keys
    (tick values and text, ...)."""
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
        **(
            {
                "colorbar": {
                    "title": {"text": hover_name, "side": "right"},
                    "thickness": 12,
                    **(colorbar or {}),
                }
            }
            if showscale
            else {}
        ),
        "hovertemplate": f"x=%{{x}} y=%{{y}}<br>{hover_name}=%{{z:.3g}}<extra></extra>",
    }
    return go.Figure({"data": [trace], "layout": _panel_layout(a.shape, title, flips, height)})


def add_label_overlay(
    fig: go.Figure, labels: np.ndarray, label_names: Mapping[int, str] | None = None, opacity: float = 0.45
) -> go.Figure:
    """Colour label map ``(H, W)`` over a panel; hover shows the structure name; 0 is transparent.

    Each label value has the colour :func:`regcore.viz.colors.label_color` gives it (a function of the
    value only, so a structure keeps its colour when another label is missing from this image).
    """
    lab = _check_2d("labels", as_array(labels)).astype(int)
    values = [int(v) for v in np.unique(lab) if v != 0]
    if not values:
        return fig
    index = label_index(lab) + 0.5  # the middle of the value's palette bin
    names = np.full(lab.shape, "", dtype=object)
    for v in values:
        names[lab == v] = (label_names or {}).get(v, f"label {v}")
    fig.add_trace(
        go.Heatmap(
            z=index.T,
            customdata=names.T,
            colorscale=palette_colorscale(),
            zmin=0,
            zmax=len(PALETTE),
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
    color: str | None = None,
    dash: str = "solid",
    name: str = "",
    max_labels: int = 40,
    label_names: Mapping[int, str] | None = None,
) -> go.Figure:
    """Outline each structure of a label map ``(H, W)`` (skimage marching squares at 0.5).

    One trace per label value, coloured :func:`regcore.viz.colors.label_color` (the value's colour on
    every panel) unless ``color`` forces one colour for all; ``dash`` tells images apart (fixed solid,
    moving/warped dotted).
    """
    from skimage.measure import find_contours

    lab = _check_2d("labels", as_array(labels)).astype(int)
    for v in [int(v) for v in np.unique(lab) if v != 0][:max_labels]:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for c in find_contours((lab == v).astype(float), 0.5):
            xs += list(c[:, 0]) + [None]
            ys += list(c[:, 1]) + [None]
        if xs:
            structure = (label_names or {}).get(v, f"label {v}")
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=f"{name} {v}: {structure}".strip(),
                    hoverinfo="skip",
                    line={"color": color or label_color(v), "width": 1.3, "dash": dash},
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
    ``threshold`` stay transparent (None = draw everything). The colour bar is titled ``name``."""
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
            colorbar={"title": {"text": name, "side": "right"}, "thickness": 12},
            hoverongaps=False,
            hovertemplate=f"x=%{{x}} y=%{{y}}<br>{name}=%{{z:.3g}}<extra></extra>",
        )
    )
    return fig
