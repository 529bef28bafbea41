"""Assembly of the :class:`~regcore.methods.base.RegistrationResult` of a classical method."""

from __future__ import annotations

import torch

from regcore.image import Image
from regcore.methods.base import RegistrationResult
from regcore.spatial.warp import warp


def build_result(
    method: str,
    fixed: Image,
    moving: Image,
    displacement: torch.Tensor,
    *,
    timer,
    device: torch.device | str,
    config,
    loss_history: list[dict[str, float]],
    affine: torch.Tensor | None = None,
    velocity: torch.Tensor | None = None,
    extras: dict | None = None,
) -> RegistrationResult:
    """Warp ``moving`` by ``displacement`` (``(1, ndim, *S)`` fixed voxels, fixed -> moving) and pack
    a :class:`RegistrationResult` (tensors on the CPU, float32). ``affine``: the ``(ndim, ndim+1)``
    voxel matrix fixed voxel -> moving voxel, when the method has one."""
    disp = displacement.detach().float()
    with torch.no_grad():
        warped = warp(moving.batch().to(disp.device), disp)[0]
    return RegistrationResult(
        method=method,
        fixed=fixed,
        moving=moving,
        warped=moving.with_data(
            warped.cpu().to(moving.data.dtype if moving.data.is_floating_point() else torch.float32),
            name=f"{moving.name} warped ({method})",
        ),
        displacement=disp.cpu(),
        affine=None if affine is None else affine.detach().float().cpu(),
        velocity=None if velocity is None else velocity.detach().float().cpu(),
        loss_history=loss_history,
        runtime_s=timer.runtime_s,
        peak_memory_mb=timer.peak_memory_mb,
        device=str(device),
        config=config,
        extras=extras or {},
    )
