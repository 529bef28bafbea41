"""Fixed-vs-moving comparison figures: checkerboard, blend, difference, flicker.

Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from regcore.viz.panels import image_figure
from regcore.viz.slices import as_array, checkerboard, normalise01


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
