"""Plotly figures of an uncertainty estimate (pure functions -> ``go.Figure``; no streamlit).

2D maps are drawn over the fixed image with :mod:`regcore.viz` panels (axis p horizontal, axis q
vertical, radiological flips by axis ranges); a 3D estimate is shown at one slice (default the
middle of the last axis, axial for the sample brains).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from regcore import viz
from regcore.uncertainty.estimate import UncertaintyResult

MAPS = {
    "std": ("predicted std", "mm", "Hot"),
    "variance": ("displacement variance", "mm²", "Hot"),
    "entropy": ("label entropy", "bits", "Viridis"),
    "error": ("actual error |u - u_true|", "mm", "Hot"),
}
"""Map key -> (title, unit, colour scale)."""


def map_values(result: UncertaintyResult, key: str) -> np.ndarray | None:
    """The ``(*S)`` array of map ``key`` (see :data:`MAPS`), or None when the estimate has no such map."""
    t = {
        "std": result.std_mm,
        "variance": result.variance_mm2,
        "entropy": result.label_entropy_bits,
        "error": result.error_mm,
    }.get(key)
    if key not in MAPS:
        raise ValueError(f"map must be one of {', '.join(MAPS)}, got {key!r}")
    return None if t is None else t.detach().float().cpu().numpy()


def colour_max(result: UncertaintyResult, values: np.ndarray, key: str) -> float:
    """Top of the colour scale: the entropy's maximum; else the 99th percentile inside the foreground
    (the background, where nothing constrains the registration, can reach tens of mm and would wash it out)."""
    if key == "entropy":
        return max(float(values.max()), 1e-6)
    mask = result.mask.cpu().numpy() if result.mask is not None and bool(result.mask.any()) else None
    inside = values[mask] if mask is not None else values
    return max(float(np.percentile(inside, 99)), 1e-6)


def default_slice(result: UncertaintyResult) -> tuple[int | None, int | None]:
    """``(axis, index)`` shown for 3D (middle of the last axis); ``(None, None)`` in 2D."""
    if result.fixed.ndim == 2:
        return None, None
    return 2, result.fixed.shape[2] // 2


def map_figure(
    result: UncertaintyResult,
    key: str = "std",
    *,
    axis: int | None = None,
    index: int | None = None,
    opacity: float = 0.65,
    height: int = 380,
) -> go.Figure:
    """Map ``key`` over the fixed image with a colour bar titled with its unit."""
    values = map_values(result, key)
    if values is None:
        raise ValueError(f"this estimate has no {MAPS[key][0]} map")
    if result.fixed.ndim == 3 and (axis is None or index is None):
        axis, index = default_slice(result)
    fixed = result.fixed.numpy()
    take = (lambda a: a) if result.fixed.ndim == 2 else (lambda a: viz.extract_slice(a, axis, index))
    title, unit, scale = MAPS[key]
    flips = viz.image_flips(result.fixed, axis)
    fig = viz.image_figure(take(fixed), title=f"{title} ({unit})", flips=flips, height=height)
    shown = take(values)
    viz.add_heat_overlay(
        fig,
        shown,
        colorscale=scale,
        zmin=0.0,
        zmax=colour_max(result, values, key),
        threshold=0.0 if key == "entropy" else None,  # entropy 0 (members agree): the image shows through
        opacity=opacity,
        name=f"{title} ({unit})",
    )
    fig.data[-1].update(colorbar={"title": {"text": unit, "side": "right"}, "thickness": 14})
    return fig


def reliability_figure(result: UncertaintyResult, height: int = 340) -> go.Figure:
    """Reliability plot: mean actual error (mm) per predicted-std bin, against the bin's mean std (mm)."""
    if result.calibration is None:
        raise ValueError("this estimate has no calibration (the pair's true displacement is unknown)")
    c = result.calibration
    x = [b.mean_std_mm for b in c.bins]
    y = [b.mean_error_mm for b in c.bins]
    top = max([*x, *y, 1e-6])
    fig = go.Figure(
        [
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name="mean actual error",
                customdata=[b.voxels for b in c.bins],
                hovertemplate="predicted std %{x:.2f} mm<br>actual error %{y:.2f} mm<br>%{customdata} voxels"
                "<extra></extra>",
            ),
            go.Scatter(
                x=[0, top],
                y=[0, top],
                mode="lines",
                name="error = std",
                line={"dash": "dot", "color": "#888"},
            ),
        ]
    )
    fig.update_layout(
        title={"text": f"Reliability (Spearman {c.spearman:.2f}, {c.voxels} voxels)", "x": 0.5},
        xaxis_title="predicted std (mm), decile mean",
        yaxis_title="mean actual error (mm)",
        height=height,
        margin={"l": 50, "r": 10, "t": 40, "b": 45},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
