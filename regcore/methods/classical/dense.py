"""Dense displacement field by gradient descent (Adam), with a diffusion or bending regulariser.

Loss per level: ``similarity(fixed, moving o (id + u)) + weight * regulariser(u)``, where ``u``
``(1, ndim, *S_level)`` is the displacement in voxels of the level grid (fixed -> moving). Levels
run coarse to fine; ``u`` is upsampled (and its voxel units rescaled) between levels.

:func:`optimise_field` is shared with ``svf`` (which optimises a velocity and integrates it). The similarity is
chosen from the images unless set (``similarity="auto"``: LNCC for one contrast, MIND-SSC between two,
:mod:`regcore.methods.classical.contrast`); the run's config records the one used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from regcore.config import param
from regcore.image import Image
from regcore.losses import Regularizer, make_regularizer, make_similarity
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical.contrast import resolve_similarity, similarity_param
from regcore.methods.classical.inputs import minmax, pair_tensors, pick_device, validate_pair
from regcore.methods.classical.progress import LevelProgress
from regcore.methods.classical.pyramid import downsample, level_shape, resize_field, validate_schedule
from regcore.methods.classical.result import build_result
from regcore.methods.registry import Family, MethodSpec, register_method
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class DenseConfig:
    similarity: str = similarity_param()
    window: int = param(5, "Local window in voxels (lncc, lncc_gauss, ssim).", range=(3, 15), step=2)
    regularizer: Regularizer = param(
        Regularizer.DIFFUSION,
        "Smoothness penalty on the displacement.",
        choices=(Regularizer.DIFFUSION, Regularizer.BENDING, Regularizer.TV),
    )
    weight: float = param(
        1.0, "Regulariser weight (higher = smoother, less accurate).", range=(0.0, 100.0), step=0.1
    )
    levels: tuple[int, ...] = param((4, 2, 1), "Downsampling factors, coarse to fine.")
    iterations: tuple[int, ...] = param((100, 50, 20), "Adam iterations per level.")
    learning_rate: float = param(
        0.1, "Adam learning rate in voxels of the level grid per step.", range=(1e-3, 2.0), step=0.01
    )
    max_level_voxels: int = param(
        2_000_000,
        "Levels (after the first) whose grid has more voxels are skipped and "
        "the coarser field is upsampled: bounds CPU time in 3D. Raise it on a GPU.",
        range=(1_000, 1_000_000_000),
    )
    device: str = param(
        "auto", "Device: auto (CUDA when available), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )


def optimise_field(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    levels,
    iterations,
    learning_rate: float,
    similarity,
    regularizer,
    weight: float,
    to_displacement: Callable[[torch.Tensor], torch.Tensor] = lambda p: p,
    progress=None,
    history: list | None = None,
    init: torch.Tensor | None = None,
    max_level_voxels: int | None = None,
    spacing: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Multi-level Adam on a field parameter ``p`` ``(1, ndim, *S_level)`` (voxel units of its level).

    ``spacing`` (mm per spatial axis, optional): anisotropic pyramid, thick-slice axes shrunk less
    (:func:`~regcore.methods.classical.pyramid.axis_factors`).

    ``init`` (optional, ``(1, ndim, *S_any)`` in voxels of its own grid) starts the first level.
    Levels after the first whose grid exceeds ``max_level_voxels`` are skipped (field upsampled).

    The loss is ``similarity(fixed_l, moving_l o (id + to_displacement(p))) + weight * regularizer(p)``.
    Returns ``p`` resized to the full grid of ``fixed`` ``(1, C, *S)`` (voxel units of that grid).
    """
    ndim = fixed.ndim - 2
    levels, iterations = validate_schedule(levels, iterations)
    tracker = LevelProgress(progress, iterations)
    p = init
    for level, (factor, n_iter) in enumerate(zip(levels, iterations)):
        too_big = (
            max_level_voxels is not None
            and math.prod(level_shape(fixed.shape[2:], factor, spacing)) > max_level_voxels
        )
        if p is not None and level > 0 and too_big:
            continue
        f_l, m_l = downsample(fixed, factor, spacing), downsample(moving, factor, spacing)
        shape = tuple(f_l.shape[2:])
        p = (
            torch.zeros(1, ndim, *shape, device=fixed.device)
            if p is None
            else resize_field(p.detach(), shape)
        )
        p.requires_grad_(True)
        optimiser = torch.optim.Adam([p], lr=learning_rate)
        for it in range(n_iter):
            optimiser.zero_grad(set_to_none=True)
            sim = similarity(f_l, warp(m_l, to_displacement(p)))
            reg = regularizer(p) if weight > 0 else torch.zeros((), device=fixed.device)
            loss = sim + weight * reg
            loss.backward()
            optimiser.step()
            s, r = sim.item(), reg.item()
            if history is not None:
                history.append(
                    {"similarity": s, "regularizer": r, "total": s + weight * r, "level": float(level)}
                )
            tracker.tick(
                level,
                it,
                f"level {level + 1}/{len(levels)} (x{factor}), iter {it + 1}/{n_iter}",
                similarity=s,
                regularizer=r,
            )
    return resize_field(p.detach(), tuple(fixed.shape[2:]))


def optimise_configured_field(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    config,
    *,
    progress=None,
    history: list | None = None,
    to_displacement: Callable[[torch.Tensor], torch.Tensor] = lambda p: p,
    spacing: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """:func:`optimise_field` with the schedule, similarity (``window``), regulariser, weight and
    ``max_level_voxels`` of a :class:`DenseConfig`-like config (dense, svf), on both images min-max scaled to [0, 1]
    (``weight`` and the similarity's stabilisers then mean the same for 0-1 and 0-4000 intensities)."""
    return optimise_field(
        minmax(fixed),
        minmax(moving),
        levels=config.levels,
        iterations=config.iterations,
        learning_rate=config.learning_rate,
        similarity=make_similarity(config.similarity, fixed.ndim - 2, window=config.window, spacing=spacing),
        regularizer=make_regularizer(config.regularizer),
        weight=config.weight,
        to_displacement=to_displacement,
        progress=progress,
        history=history,
        max_level_voxels=config.max_level_voxels,
        spacing=spacing,
    )


class DenseMethod:
    """Regularised dense displacement optimisation (see module docstring)."""

    name = "dense"

    def register(
        self, fixed: Image, moving: Image, config: DenseConfig | None = None, progress=None
    ) -> RegistrationResult:
        config = config or DenseConfig()
        validate_pair(fixed, moving)
        device = pick_device(config.device, fixed)
        history: list[dict[str, float]] = []
        with Timer(device) as timer:
            f, m = pair_tensors(fixed, moving, device)
            config = replace(config, similarity=resolve_similarity(config.similarity, f, m, fixed.spacing))
            u = optimise_configured_field(
                f, m, config, progress=progress, history=history, spacing=fixed.spacing
            )
        return build_result(
            self.name, fixed, moving, u, timer=timer, device=device, config=config, loss_history=history
        )


SPEC = register_method(
    MethodSpec(
        name="dense",
        title="Dense displacement (regularised)",
        config_cls=DenseConfig,
        factory=DenseMethod,
        family=Family.DEFORMABLE,
        description="Free-form voxel displacement optimised by Adam with a diffusion/bending penalty, "
        "multi-resolution. Not guaranteed diffeomorphic.",
    )
)
