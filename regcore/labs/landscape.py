"""Similarity landscapes: how MSE, NCC and MI change as the moving image is translated or rotated.

Costs are "lower is better" (MSE, 1 - NCC, -MI) so every curve has its minimum at the best
alignment. Multi-resolution: the same landscape on Gaussian-smoothed, downsampled images.
"""

from __future__ import annotations

import numpy as np

from regcore.labs.transforms import rigid_displacement, warp_image

METRICS = ("MSE", "NCC", "MI")


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """MI in nats from the joint histogram of two equally shaped images."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same size, got {a.size} and {b.size}")
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    p = joint / max(joint.sum(), 1)
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def similarity_cost(fixed: np.ndarray, moving: np.ndarray, metric: str, bins: int = 32) -> float:
    """Lower-is-better cost: MSE, 1 - NCC (global Pearson) or -MI."""
    f, m = np.asarray(fixed, float), np.asarray(moving, float)
    if f.shape != m.shape:
        raise ValueError(f"fixed {f.shape} and moving {m.shape} must have the same shape")
    if metric == "MSE":
        return float(((f - m) ** 2).mean())
    if metric == "NCC":
        fc, mc = f - f.mean(), m - m.mean()
        return float(1 - (fc * mc).sum() / (np.sqrt((fc ** 2).sum() * (mc ** 2).sum()) + 1e-12))
    if metric == "MI":
        return -mutual_information(f, m, bins)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def downsample(image: np.ndarray, level: int) -> np.ndarray:
    """Gaussian smoothing (sigma = 2^level / 2 voxels) then stride-2^level subsampling."""
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    if level == 0:
        return np.asarray(image, float)
    from scipy.ndimage import gaussian_filter
    f = 2 ** level
    return gaussian_filter(np.asarray(image, float), f / 2)[::f, ::f]


def landscape(fixed: np.ndarray, moving: np.ndarray, *, kind: str = "translation", values=None,
              metrics=METRICS, level: int = 0, normalise: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
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
    out = {k: np.empty(len(values)) for k in metrics}
    for n, v in enumerate(values):
        u = (rigid_displacement(f.shape, tx=v / 2 ** level) if kind == "translation"
             else rigid_displacement(f.shape, angle_deg=v))
        w = warp_image(m, u)
        for k in metrics:
            out[k][n] = similarity_cost(f, w, k)
    if normalise:
        for k, c in out.items():
            span = c.max() - c.min()
            out[k] = (c - c.min()) / span if span > 0 else np.zeros_like(c)
    return values, out
