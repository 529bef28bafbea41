"""Small synthetic 2D images for the concept labs (no files, deterministic)."""

from __future__ import annotations

import numpy as np


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1


def phantom_labels(size: int = 96, shift: float = 0.0, squeeze: float = 0.0) -> np.ndarray:
    """Integer label map ``(size, size)``: 1 head, 2/3 lobes, 4 core; ``shift``/``squeeze`` in [-0.3, 0.3]."""
    if not 16 <= int(size) <= 1024:
        raise ValueError(f"size must be in [16, 1024], got {size}")
    x, y = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    lab = np.zeros((size, size), np.int64)
    lab[_ellipse(x, y, 0, 0, 0.8 - squeeze, 0.9)] = 1
    lab[_ellipse(x, y, -0.3 + shift, 0.1, 0.22, 0.35 + squeeze)] = 2
    lab[_ellipse(x, y, 0.3 + shift, 0.1, 0.22, 0.35 - squeeze)] = 3
    lab[_ellipse(x, y, shift, -0.45, 0.15, 0.15)] = 4
    return lab


LABEL_NAMES = {1: "head", 2: "left lobe", 3: "right lobe", 4: "core"}
CONTRASTS = {"T1-like": (0.0, 0.5, 0.9, 0.8, 0.25), "T2-like": (0.0, 0.7, 0.2, 0.35, 0.95)}


def phantom_image(
    labels: np.ndarray, contrast: str = "T1-like", noise: float = 0.02, seed: int = 0
) -> np.ndarray:
    """Intensity image from a label map: one grey value per label (contrast) + smooth texture + noise."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {sorted(CONTRASTS)}, got {contrast!r}")
    from scipy.ndimage import gaussian_filter

    img = np.asarray(CONTRASTS[contrast])[labels].astype(float)
    img = gaussian_filter(img, 0.8)
    rng = np.random.default_rng(seed)
    return (img + noise * rng.standard_normal(img.shape)).astype(np.float32)
