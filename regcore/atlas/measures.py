"""What tells a good template: sharpness, subject-to-template distance, label agreement.

* :func:`sharpness`: mean gradient magnitude of the template (intensity per mm). A blurry mean of
  misaligned subjects has weak edges; as the subjects line up the edges sharpen.
* :func:`mean_distance_mm`: how far the subjects are from the template, the mean length of their
  displacement fields in mm.
* :func:`majority_vote`: the template's label map, the most frequent warped subject label per voxel.
* :func:`agreement_dice`: mean Dice of each warped subject label map against the majority vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from regcore.image import Image
from regcore.spatial.lengths import vector_lengths

__all__ = ["agreement_dice", "majority_vote", "mean_distance_mm", "sharpness"]


def sharpness(image: Image) -> float:
    """Mean gradient magnitude of channel 0 over the grid, intensity units per mm.

    Central differences inside, one-sided at the border (``numpy.gradient`` with the voxel spacing).
    """
    if not isinstance(image, Image) or image.is_labels:
        raise TypeError("sharpness needs an intensity Image")
    arr = image.numpy().astype(np.float64)
    grads = np.gradient(arr, *image.spacing)
    return float(np.sqrt(sum(g * g for g in grads)).mean())


def mean_distance_mm(displacement: torch.Tensor, spacing: Sequence[float], mask=None) -> float:
    """Mean length in mm of a displacement ``(B, n, *S)`` in voxels (component i along axis i).

    Averaged over the voxels of ``mask`` (``(*S)`` bool) when given, else over the whole grid, and
    over the batch.
    """
    if not isinstance(displacement, torch.Tensor) or displacement.ndim < 3:
        raise TypeError("displacement must be a (B, n, *S) tensor")
    n = displacement.shape[1]
    if len(spacing) != n:
        raise ValueError(f"spacing must have {n} values, got {tuple(spacing)}")
    sp = torch.as_tensor([float(s) for s in spacing], dtype=torch.float64).view(1, n, *([1] * n))
    length = vector_lengths(displacement.detach().double().cpu() * sp)  # (B, *S)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        if tuple(m.shape) != tuple(length.shape[1:]):
            raise ValueError(f"mask shape {tuple(m.shape)} must be the grid {tuple(length.shape[1:])}")
        if not bool(m.any()):
            return float("nan")
        return float(length[:, m].mean())
    return float(length.mean())


def majority_vote(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Per voxel, the most frequent label of ``label_maps`` (each ``(*S)`` integer); ties -> smaller value.
    The label map of :func:`regcore.segment.fusion.majority_vote` (the one implementation)."""
    from regcore.segment.fusion import majority_vote as fuse_by_majority

    if not len(label_maps):
        raise ValueError("majority_vote needs at least one label map")
    return np.asarray(fuse_by_majority([np.asarray(m) for m in label_maps]).labels).astype(np.int64)


def agreement_dice(warped_labels: Sequence[np.ndarray], template_labels: np.ndarray) -> list[float]:
    """Mean Dice (over the non-zero labels present) of each warped subject map vs the template's map."""
    from regcore.metrics.overlap import mean_dice

    return [float(mean_dice(np.asarray(template_labels), np.asarray(w))) for w in warped_labels]
