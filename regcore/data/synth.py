"""SynthMorph-style synthetic data: random label maps and random-contrast renderings.

Use for teaching (what a contrast-agnostic network sees) and for on-the-fly training data::

    rng = np.random.default_rng(0)
    labels = synth.random_label_map((128, 128), 16, rng)   # (H, W) int64, values 1..16
    image = synth.render(labels, rng)                       # (H, W) float32 in [0, 1]

Reference: Hoffmann et al., "SynthMorph: learning contrast-invariant registration without
acquired images", IEEE TMI 2022 (label maps = argmax over smooth random noise channels,
warped by a random smooth field; images = per-label Gaussian intensities, blur, bias, gamma).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from regcore.spatial.warp import warp


def _check_shape(shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 4 for s in shape):
        raise ValueError(f"shape must be 2D or 3D with every size >= 4, got {shape}")
    return shape


def _smooth_noise(
    shape: tuple[int, ...], channels: int, scale: float, rng: np.random.Generator
) -> torch.Tensor:
    """``(1, channels, *shape)`` float32 noise: Gaussian noise on a grid ``scale`` times coarser, upsampled."""
    coarse = tuple(max(2, int(round(s / scale))) for s in shape)
    noise = torch.from_numpy(rng.standard_normal((1, channels, *coarse)).astype(np.float32))
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(noise, size=shape, mode=mode, align_corners=True)


def random_label_map(
    shape,
    n_labels: int,
    rng: np.random.Generator,
    *,
    scale: float | None = None,
    warp_voxels: float | None = None,
) -> np.ndarray:
    """Random label map ``(*shape)`` int64 with values ``1..n_labels`` (every voxel labelled).

    Args:
        shape: spatial shape (2D or 3D), tensor axis order.
        n_labels: number of labels K >= 2 (argmax over K smooth noise channels).
        rng: numpy Generator (the only source of randomness: same seed -> same map).
        scale: blob size in voxels (coarse-noise grid spacing); default ``min(shape) / 8``.
        warp_voxels: peak displacement (voxels) of the random smooth warp applied to the
            channels before the argmax; default ``min(shape) / 16``. 0 disables it.
    """
    shape = _check_shape(shape)
    if not isinstance(n_labels, (int, np.integer)) or n_labels < 2:
        raise ValueError(f"n_labels must be an int >= 2, got {n_labels!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    scale = float(scale if scale is not None else max(min(shape) / 8.0, 2.0))
    channels = _smooth_noise(shape, int(n_labels), scale, rng)
    amount = float(warp_voxels if warp_voxels is not None else min(shape) / 16.0)
    if amount > 0:
        field = _smooth_noise(shape, len(shape), scale * 2, rng)
        field = field * (amount / field.norm(dim=1).max().clamp_min(1e-6))
        channels = warp(channels, field, mode="bilinear", padding_mode="border")
    return channels[0].argmax(0).numpy().astype(np.int64) + 1


def render(
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    noise_std: tuple[float, float] = (0.0, 0.05),
    blur_voxels: tuple[float, float] = (0.0, 1.0),
    bias_strength: float = 0.3,
    gamma_log_std: float = 0.25,
) -> np.ndarray:
    """Render a label map as an image of random contrast: ``(*S)`` float32 in [0, 1].

    Per label: a uniform random mean in [0, 1] and Gaussian noise with a random std in
    ``noise_std``; then a Gaussian blur (sigma drawn from ``blur_voxels``), a smooth
    multiplicative bias field ``exp(bias_strength * smooth noise)``, min-max normalisation
    and a random gamma ``exp(N(0, gamma_log_std))``. Label 0, if present, is a label like any other.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be a 2D or 3D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    values, inverse = np.unique(labels, return_inverse=True)
    means = rng.uniform(0.0, 1.0, len(values))
    stds = rng.uniform(*noise_std, len(values))
    img = means[inverse].reshape(labels.shape) + stds[inverse].reshape(labels.shape) * rng.standard_normal(
        labels.shape
    )
    sigma = rng.uniform(*blur_voxels)
    if sigma > 0.05:
        from scipy.ndimage import gaussian_filter  # imported on use: `regcore register` never needs it

        img = gaussian_filter(img, sigma)
    img = img * bias_field(labels.shape, rng, bias_strength)
    img = (img - img.min()) / max(img.max() - img.min(), 1e-8)
    img = img ** np.exp(rng.normal(0.0, gamma_log_std))
    return img.astype(np.float32)


def bias_field(shape, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """Smooth multiplicative field ``exp(strength * n)`` ``(*shape)`` float64, n smooth with max |n| = 1."""
    shape = _check_shape(shape)
    n = _smooth_noise(shape, 1, max(min(shape) / 3.0, 2.0), rng)[0, 0].numpy().astype(np.float64)
    n /= max(np.abs(n).max(), 1e-8)
    return np.exp(strength * n)


def mri_artefacts(
    image: np.ndarray,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    *,
    bias_strength: float = 0.15,
    noise_std: float = 0.015,
    gamma_log_std: float = 0.1,
) -> np.ndarray:
    """Bias field, contrast (gamma) jitter and Rician-like noise for a [0, 1] image; ``(*S)`` float32 in [0, 1].

    ``mask`` (bool, same shape) keeps the background at zero before noise is added.
    """
    img = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    img = img ** np.exp(rng.normal(0.0, gamma_log_std))
    img = img * bias_field(img.shape, rng, bias_strength)
    if mask is not None:
        img = img * mask
    noisy = np.hypot(
        img + noise_std * rng.standard_normal(img.shape), noise_std * rng.standard_normal(img.shape)
    )
    return np.clip(noisy / max(np.percentile(noisy, 99.9), 1e-6), 0.0, 1.0).astype(np.float32)
