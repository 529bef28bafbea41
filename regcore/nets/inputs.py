"""Input preparation shared by training and inference, so both see identical tensors.

* :func:`normalise_intensity`: robust min-max to [0, 1] per image (0.5 / 99.5 percentiles).
* :func:`to_model_grid` / :func:`field_to_image_grid`: resample a pair to the model's training
  resolution (mm per voxel), pad to a multiple of the network's divisor, and bring the predicted
  displacement back to the image grid (voxel units rescaled by :func:`resize_field`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from regcore.nets.spatial_ops import resize_field, resize_image


def normalise_intensity(x: torch.Tensor, low: float = 0.005, high: float = 0.995) -> torch.Tensor:
    """Map each image of ``(B, C, *S)`` to [0, 1] between its ``low`` and ``high`` quantiles (clipped)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        raise ValueError(f"x must be a (B, C, *S) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    flat = x.float().flatten(1)
    if flat.shape[1] > 2_000_000:  # quantile has a size limit; a strided subsample is plenty
        flat_q = flat[:, :: flat.shape[1] // 1_000_000 + 1]
    else:
        flat_q = flat
    lo = torch.quantile(flat_q, low, dim=1)
    hi = torch.quantile(flat_q, high, dim=1)
    view = (-1,) + (1,) * (x.ndim - 1)
    scale = (hi - lo).clamp_min(1e-8)
    return ((x.float() - lo.view(view)) / scale.view(view)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class ModelGrid:
    """How an image grid maps onto the model grid.

    Attributes:
        image_shape: spatial shape of the input images.
        resized_shape: shape after resampling to the training resolution.
        padded_shape: ``resized_shape`` padded up to a multiple of the divisor.
    """

    image_shape: tuple[int, ...]
    resized_shape: tuple[int, ...]
    padded_shape: tuple[int, ...]

    @property
    def offsets(self) -> tuple[int, ...]:
        """Low-end padding per axis (the resized image sits centred in the padded grid)."""
        return tuple((p - r) // 2 for r, p in zip(self.resized_shape, self.padded_shape))

    @property
    def pad(self) -> list[int]:
        """``F.pad`` argument (last axis first), centring the image."""
        out: list[int] = []
        for r, p, o in zip(reversed(self.resized_shape), reversed(self.padded_shape), reversed(self.offsets)):
            out += [o, p - r - o]
        return out


def plan_model_grid(
    image_shape: tuple[int, ...],
    image_spacing: tuple[float, ...],
    model_spacing: float | None,
    divisor: int,
    min_shape: tuple[int, ...] | None = None,
) -> ModelGrid:
    """Shape at ``model_spacing`` mm (None: keep the image grid), padded to a multiple of ``divisor``
    and at least to ``min_shape`` (the training canvas, so inference sees what training saw)."""
    if model_spacing is None:
        resized = tuple(image_shape)
    else:
        resized = tuple(max(int(round(n * s / model_spacing)), 8) for n, s in zip(image_shape, image_spacing))
    padded = tuple(int(math.ceil(r / divisor) * divisor) for r in resized)
    if min_shape is not None:
        padded = tuple(max(p, int(m)) for p, m in zip(padded, min_shape))
    return ModelGrid(tuple(image_shape), resized, padded)


def to_model_grid(x: torch.Tensor, grid: ModelGrid) -> torch.Tensor:
    """``(B, C, *image_shape)`` -> ``(B, C, *padded_shape)``: resample, then zero-pad (centred)."""
    if tuple(x.shape[2:]) != grid.image_shape:
        raise ValueError(f"x spatial shape {tuple(x.shape[2:])} != planned image shape {grid.image_shape}")
    if grid.resized_shape != grid.image_shape:
        x = resize_image(x, grid.resized_shape)
    return F.pad(x, grid.pad) if any(grid.pad) else x


def map_to_image_grid(x: torch.Tensor, grid: ModelGrid) -> torch.Tensor:
    """Model-grid scalar maps ``(B, C, *padded)`` -> ``(B, C, *image_shape)``: crop the padding, resample (linear)."""
    crop = (slice(None), slice(None)) + tuple(
        slice(o, o + r) for o, r in zip(grid.offsets, grid.resized_shape)
    )
    x = x[crop]
    return resize_image(x, grid.image_shape) if grid.resized_shape != grid.image_shape else x


def field_to_image_grid(u: torch.Tensor, grid: ModelGrid) -> torch.Tensor:
    """Model-grid displacement ``(B, n, *padded)`` -> image-grid displacement ``(B, n, *image_shape)`` (voxels)."""
    crop = (slice(None), slice(None)) + tuple(
        slice(o, o + r) for o, r in zip(grid.offsets, grid.resized_shape)
    )
    u = u[crop]
    if grid.resized_shape != grid.image_shape:
        u = resize_field(u, grid.image_shape)
    return u
