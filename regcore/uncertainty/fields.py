"""Per-voxel statistics of a stack of displacement fields (the members of an uncertainty estimate).

Convention: a stack is ``(K, 1, n, *S)``: K displacement fields, each ``(1, n, *S)`` in voxels of the
fixed grid, fixed -> moving (``warped = moving o (id + u)``). Variances are reported in mm^2 so that
anisotropic voxels are compared fairly: the variance of voxel x is the trace of the covariance of
``u(x) * spacing`` over the members (sum over the n components).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regcore.spatial.lengths import vector_lengths


def check_stack(samples: torch.Tensor, name: str = "samples") -> torch.Tensor:
    """Validate a ``(K, 1, n, *S)`` stack with K >= 2 and n = number of spatial axes; returns it as float."""
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (K, 1, n, *S), got {type(samples).__name__}")
    if samples.ndim not in (5, 6) or samples.shape[1] != 1 or samples.shape[2] != samples.ndim - 3:
        raise ValueError(f"{name} must have shape (K, 1, n, *S) with n = 2 or 3, got {tuple(samples.shape)}")
    if samples.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 members to estimate a variance, got {samples.shape[0]}")
    if not torch.isfinite(samples).all():
        raise ValueError(f"{name} contains NaN or infinite displacements")
    return samples.float()


def spacing_tensor(spacing: Sequence[float], ndim: int, like: torch.Tensor) -> torch.Tensor:
    """Voxel spacing (mm) as a ``(n, 1, ..., 1)`` tensor broadcasting over ``(n, *S)``."""
    sp = [float(s) for s in spacing]
    if len(sp) != ndim or any(s <= 0 for s in sp):
        raise ValueError(f"spacing must hold {ndim} positive values (mm), got {tuple(spacing)}")
    return torch.tensor(sp, dtype=like.dtype, device=like.device).view(ndim, *([1] * ndim))


def field_statistics(samples: torch.Tensor, spacing: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (1, n, *S) voxels, variance (*S) mm^2)`` of a member stack ``(K, 1, n, *S)``.

    The variance is the unbiased (K - 1) sample variance of each component in mm, summed over components.
    """
    s = check_stack(samples)
    n = s.shape[2]
    mm = s[:, 0] * spacing_tensor(spacing, n, s)  # (K, n, *S) mm
    variance = mm.var(dim=0, correction=1).sum(dim=0)
    return s.mean(dim=0), variance


def error_mm(displacement: torch.Tensor, truth: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """End-point error ``|u - u_true|`` in mm per voxel, ``(*S)``, of two ``(1, n, *S)`` voxel fields."""
    if tuple(displacement.shape) != tuple(truth.shape):
        raise ValueError(
            f"displacement {tuple(displacement.shape)} and true displacement {tuple(truth.shape)} differ in shape"
        )
    n = displacement.shape[1]
    d = (displacement.float() - truth.float().to(displacement.device))[0]
    return vector_lengths(d * spacing_tensor(spacing, n, d), dim=0)
