"""Similarity landscapes: how MSE, NCC and MI change as the moving image is translated or rotated.

Costs are the engine's losses (``regcore.losses.make_similarity``), "lower is better" (MSE, -NCC,
-MI), so every curve has its minimum at the best alignment. Multi-resolution: the same landscape on
Gaussian-smoothed, downsampled images.

MI uses one estimator rule at every size: :func:`mi_bins` histogram bins for the image's voxel count
(the engine's Parzen window, half a bin spacing). With the engine's fixed 32 bins a 12 x 12 image (level 1/8 of a
96 x 96 phantom) fills about 0.14 voxels per joint bin, and the estimator's noise shows up as extra
dips in the coarse curves, the opposite of what a pyramid is for.
"""

from __future__ import annotations

import numpy as np
import torch

from regcore.labs.transforms import rigid_displacement, warp_image
from regcore.losses import make_similarity

METRICS = ("MSE", "NCC", "MI")
LAB_SHIFTS = np.linspace(-24, 24, 33)
"""Translations (full-resolution voxels) the Learn page's landscapes sample."""
LAB_ANGLES = np.linspace(-45, 45, 31)
"""Rotations (degrees) the Learn page's landscapes sample."""


def mi_bins(n_voxels: int) -> int:
    """Histogram bins for MI on ``n_voxels`` voxels: the cube root of the count (the rate at which
    histogram bins may grow with the sample size), rounded and kept in [4, 32]. 96^2 -> 21, 12^2 -> 5."""
    if n_voxels < 1:
        raise ValueError(f"n_voxels must be >= 1, got {n_voxels}")
    return int(np.clip(round(n_voxels ** (1 / 3)), 4, 32))


def similarity_loss(metric: str, n_voxels: int) -> torch.nn.Module:
    """The engine loss used for ``metric`` on 2D images of ``n_voxels`` voxels (MI: :func:`mi_bins`)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "MI":
        return make_similarity("mi", 2, bins=mi_bins(n_voxels))
    return make_similarity(metric.lower(), 2)


def similarity_cost(fixed: np.ndarray, moving: np.ndarray, metric: str) -> float:
    """Lower-is-better cost of two equally shaped 2D images with :func:`similarity_loss`
    (MSE; -NCC, global Pearson; -MI in nats, Parzen)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    f, m = np.asarray(fixed, np.float32), np.asarray(moving, np.float32)
    if f.shape != m.shape:
        raise ValueError(f"fixed {f.shape} and moving {m.shape} must have the same shape")
    return _cost(similarity_loss(metric, f.size), f, m)


def _cost(loss, fixed: np.ndarray, moving: np.ndarray) -> float:
    as_batch = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None, None]  # noqa: E731
    with torch.no_grad():
        return float(loss(as_batch(fixed), as_batch(moving)))


def downsample(image: np.ndarray, level: int) -> np.ndarray:
    """Gaussian smoothing (sigma = 2^level / 2 voxels) then stride-2^level subsampling."""
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    if level == 0:
        return np.asarray(image, float)
    from scipy.ndimage import gaussian_filter

    f = 2**level
    return gaussian_filter(np.asarray(image, float), f / 2)[::f, ::f]


def count_local_minima(costs) -> int:
    """Number of interior samples strictly lower than both neighbours (a 1D curve's dips)."""
    c = np.asarray(costs, float)
    return int(np.sum((c[1:-1] < c[:-2]) & (c[1:-1] < c[2:])))


def landscape(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    kind: str = "translation",
    values=None,
    metrics=METRICS,
    level: int = 0,
    normalise: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cost of each metric vs a 1-parameter motion of ``moving``.

    Args:
        kind: "translation" (voxels of the full-resolution grid, along axis 0) or "rotation" (degrees).
        values: parameter values; default -20..20.
        level: resolution level (0 = full, 1 = half, ...); translations are rescaled accordingly.
        normalise: scale each curve to [0, 1] so curves with different units share one plot.
    Returns:
        (values, {metric: costs}).
    """
    if kind not in ("translation", "rotation"):
        raise ValueError(f"kind must be 'translation' or 'rotation', got {kind!r}")
    values = np.linspace(-20, 20, 41) if values is None else np.asarray(values, float)
    f, m = downsample(fixed, level), downsample(moving, level)
    bad = [k for k in metrics if k not in METRICS]
    if bad:
        raise ValueError(f"metrics must be among {METRICS}, got {bad}")
    losses = {k: similarity_loss(k, f.size) for k in metrics}
    out = {k: np.empty(len(values)) for k in metrics}
    for n, v in enumerate(values):
        u = (
            rigid_displacement(f.shape, tx=v / 2**level)
            if kind == "translation"
            else rigid_displacement(f.shape, angle_deg=v)
        )
        w = warp_image(m, u)
        for k in metrics:
            out[k][n] = _cost(losses[k], f, w)
    if normalise:
        for k, c in out.items():
            span = c.max() - c.min()
            out[k] = (c - c.min()) / span if span > 0 else np.zeros_like(c)
    return values, out
