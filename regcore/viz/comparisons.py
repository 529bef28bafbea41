"""Fixed-vs-moving comparison figures: checkerboard, blend, difference, flicker.

Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from regcore.viz.colors import symmetric_limit
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


def signed_difference(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """``normalise01(moving) - normalise01(fixed)``: the signed difference every difference view shows."""
    return normalise01(as_array(moving)) - normalise01(as_array(fixed))


def difference_limit(fixed: np.ndarray, *others: np.ndarray) -> float:
    """One colour limit for the difference maps of ``others`` (moving, warped, ...) to ``fixed``: the
    largest |difference| over all of them, so before and after panels share one colour range."""
    return symmetric_limit(*(signed_difference(fixed, o) for o in others))


def difference_figure(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    title: str = "Difference (moving - fixed)",
    flips=(False, False),
    height: int = 360,
    limit: float | None = None,
) -> go.Figure:
    """Signed difference of the [0, 1]-normalised images on a diverging scale centred at 0 (titled colour
    bar). ``limit``: colour range +-limit (default: this map's max |difference|); give before and after
    panels one :func:`difference_limit` so they are compared on one scale."""
    d = signed_difference(fixed, moving)
    lim = float(limit) if limit is not None else symmetric_limit(d)
    if not np.isfinite(lim) or lim <= 0:
        raise ValueError(f"limit must be a positive number, got {limit!r}")
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


def before_after_difference_figures(
    fixed: np.ndarray,
    moving: np.ndarray,
    warped: np.ndarray,
    *,
    titles=None,
    flips=(False, False),
    height=360,
) -> tuple[go.Figure, go.Figure]:
    """``(moving - fixed, warped - fixed)`` difference figures on ONE colour range (:func:`difference_limit`)."""
    lim = difference_limit(fixed, moving, warped)
    t0, t1 = titles or ("Before: moving - fixed", "After: warped - fixed")
    return (
        difference_figure(fixed, moving, title=t0, flips=flips, height=height, limit=lim),
        difference_figure(fixed, warped, title=t1, flips=flips, height=height, limit=lim),
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
