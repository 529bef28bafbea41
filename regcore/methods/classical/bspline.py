"""B-spline free-form deformation (Rueckert et al. 1999) by instance optimisation in torch, 2D/3D.

The displacement is a cubic B-spline tensor product over a control grid with ``grid_spacing``
voxels between control points (``regcore.spatial.bspline``: ``u(x) = sum_k c_k prod_i B3(x_i / s - k_i + 1)``).
Levels are hierarchical (``levels`` at most: fewer on a small image, ``pyramid.auto_levels``): level ``l``
(image downsampled by ``f``) optimises a residual B-spline with control spacing ``grid_spacing`` voxels of that
level (``grid_spacing * f`` full-resolution voxels) composed with the upsampled field of the coarser levels
(``fold_free``, the default: ``phi = phi_coarse o phi_level``, each level's coefficients kept under the injectivity bound
``regcore.spatial.bspline.INJECTIVE_FRACTION``, so no level and no composition of levels can fold: Rueckert et al.,
"Diffeomorphic registration using B-splines", MICCAI 2006) or added to it (``fold_free=False``, the classic FFD). A level
too large for ``max_level_voxels`` runs on a further-downsampled image with a proportionally finer control spacing.
Loss = similarity (any ``regcore.losses.Similarity``; by default chosen from the images, ``similarity="auto"``: LNCC for
one contrast, MIND-SSC between two, :mod:`regcore.methods.classical.contrast`) + ``bending_weight`` x bending energy of
the whole field. Adam, the coefficients projected back under the bound after each step.

Measured (2026-12-04, ``fold_free`` against added levels, same run): spine T2w -> T2* stack 17.8 % folded voxels -> 0
(cord Dice 0.751 -> 0.719: the folds had bought Dice), T1w -> T2w 0.741 -> 0.730; prostate MR -> TRUS gland Dice
0.566 -> 0.634, TRE 4.10 -> 3.24 mm, folding max 2.9 % -> 0; 24 held-out OASIS slice pairs 0.562 -> 0.564, folding max
0.035 % -> 0; OASIS 3D 0456 -> 0455 0.742 -> 0.741 (68.6 s against 63.7 s); SDlogJ lower on every set.

Units: displacements ``(1, ndim, *S)`` in voxels of the fixed grid, fixed -> moving
(``warped = moving o (id + u)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from regcore.config import param
from regcore.image import Image
from regcore.losses import make_regularizer, make_similarity
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical.contrast import resolve_similarity, similarity_param
from regcore.methods.classical.inputs import minmax, pick_device, validate_pair
from regcore.methods.classical.progress import LevelProgress
from regcore.methods.classical.pyramid import auto_levels, downsample, level_shape, resize_field
from regcore.methods.classical.result import build_result
from regcore.methods.registry import Family, MethodSpec, register_method
from regcore.spatial.bspline import INJECTIVE_FRACTION, bspline_to_displacement, control_grid_shape
from regcore.spatial.compose import compose
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class BSplineConfig:
    similarity: str = similarity_param()
    grid_spacing: int = param(
        8,
        "Control-point spacing in voxels of each level (the finest level's spacing in "
        "full-resolution voxels).",
        range=(2, 64),
    )
    levels: int = param(
        3,
        "Resolution levels (factor 2 each), each adding a residual B-spline; at most: fewer when the coarsest "
        "level would keep fewer than 24 voxels along an axis it shrinks (a small image).",
        range=(1, 5),
    )
    iterations: int = param(80, "Adam iterations per level.", range=(1, 2000))
    learning_rate: float = param(
        0.2, "Adam step size (voxels of the level per iteration, roughly).", range=(0.001, 5.0), step=0.01
    )
    bending_weight: float = param(
        20.0, "Weight of the bending energy of the displacement (voxel units).", range=(0.0, 100.0), step=0.1
    )
    fold_free: bool = param(
        True,
        "Keep the field free of folds by construction: each level's control-point displacements stay under the "
        "bound that makes a cubic B-spline injective (0.40 x control spacing in 3D, 0.49 in 2D; Choi & Lee "
        "2000) and the levels are composed, not added (Rueckert et al. 2006).",
    )
    max_level_voxels: int = param(
        2_000_000,
        "A level whose image has more voxels is optimised on the image "
        "downsampled by 2 (repeatedly) with the control spacing halved, so its B-spline "
        "keeps the same physical control-point density: keeps a 1 mm 3D brain to minutes "
        "on CPU. Raise it on a GPU.",
        range=(1_000, 1_000_000_000),
    )
    window: int = param(7, "Local window in voxels (lncc, lncc_gauss, ssim).", range=(3, 21), advanced=True)
    normalise: bool = param(
        True, "Min-max normalise both images to [0, 1] before registering.", advanced=True
    )
    device: str = param(
        "auto", "Where to run: auto (CUDA when present), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )


class _Adam:
    """Plain Adam on one tensor (torch.optim.Adam's first use imports torch._dynamo: ~9 s on 2 cores)."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps, self.t = param, lr, betas, eps, 0
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.t += 1
        g = self.param.grad
        self.m.mul_(b1).add_(g, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        self.param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


def _combine(base: torch.Tensor, residual: torch.Tensor, fold_free: bool, level: int) -> torch.Tensor:
    """Field of the coarser levels ``base`` and this level's ``residual`` (both ``(1, n, *S)``, voxels):
    ``base o (id + residual)`` composed when ``fold_free`` (injective stays injective), else added."""
    if not fold_free:
        return base + residual
    return residual if level == 0 else compose(base, residual)


def evaluation_grid(
    shape: tuple[int, ...],
    factor: int,
    grid_spacing: int,
    max_voxels: int,
    voxel_size: tuple[float, ...] | None = None,
) -> tuple[int, int]:
    """Image downsampling factor and control spacing (voxels of that image) for one level.

    Starts at the level's ``factor`` and ``grid_spacing``; while the downsampled image has more than
    ``max_voxels`` voxels (and the spacing can still be halved to >= 2), doubles the factor and halves
    the spacing, which keeps the control points at the same physical density. ``voxel_size`` (mm per axis):
    anisotropic pyramid (:func:`~regcore.methods.classical.pyramid.axis_factors`).
    """
    spacing = grid_spacing
    while math.prod(level_shape(shape, factor, voxel_size)) > max_voxels and spacing % 2 == 0 and spacing > 2:
        factor, spacing = factor * 2, spacing // 2
    return factor, spacing


class BSplineMethod:
    """Multi-level B-spline FFD; see module docstring."""

    name = "bspline"

    def register(
        self, fixed: Image, moving: Image, config: BSplineConfig, progress=None
    ) -> RegistrationResult:
        validate_pair(fixed, moving)
        device = pick_device(config.device, fixed)
        f0, m0 = fixed.batch().to(device), moving.batch().to(device)
        config = replace(config, similarity=resolve_similarity(config.similarity, f0, m0, fixed.spacing))
        if config.normalise:
            f0, m0 = minmax(f0), minmax(m0)
        similarity = make_similarity(
            config.similarity, fixed.ndim, window=config.window, spacing=fixed.spacing
        ).to(device)
        bending = make_regularizer("bending")
        return self._run(fixed, moving, config, progress, device, f0, m0, similarity, bending)

    def _run(
        self, fixed, moving, config, progress, device, f0, m0, similarity, bending
    ) -> RegistrationResult:
        ndim = fixed.ndim
        factors = auto_levels(tuple(fixed.shape), config.levels, fixed.spacing)
        ticker = LevelProgress(progress, (config.iterations,) * len(factors), report_every=10)
        history: list[dict[str, float]] = []
        with Timer(device) as timer:
            base = None
            for level, level_factor in enumerate(factors):
                factor, spacing = evaluation_grid(
                    tuple(f0.shape[2:]),
                    level_factor,
                    config.grid_spacing,
                    config.max_level_voxels,
                    fixed.spacing,
                )
                f, m = downsample(f0, factor, fixed.spacing), downsample(m0, factor, fixed.spacing)
                shape = tuple(f.shape[2:])
                base = (
                    torch.zeros(1, ndim, *shape, device=device) if base is None else resize_field(base, shape)
                ).detach()
                coeffs = torch.zeros(
                    1, ndim, *control_grid_shape(shape, spacing), device=device, requires_grad=True
                )
                adam = _Adam(coeffs, config.learning_rate)
                bound = INJECTIVE_FRACTION[ndim] * spacing
                for it in range(config.iterations):
                    coeffs.grad = None
                    r = bspline_to_displacement(coeffs, shape, spacing)
                    u = _combine(base, r, config.fold_free, level)
                    sim = similarity(f, warp(m, u))
                    reg = bending(u) if config.bending_weight > 0 else torch.zeros((), device=device)
                    loss = sim + config.bending_weight * reg
                    loss.backward()
                    adam.step()
                    if config.fold_free:
                        coeffs.data.clamp_(-bound, bound)
                    sim_v, reg_v = float(sim.detach()), float(reg.detach())
                    if it % 10 == 0 or it == config.iterations - 1:
                        history.append({"similarity": sim_v, "regularizer": reg_v, "level": float(level)})
                    ticker.tick(
                        level,
                        it,
                        f"level {level + 1}/{len(factors)}, iter {it + 1}/{config.iterations}",
                        similarity=sim_v,
                        regularizer=reg_v,
                    )
                with torch.no_grad():
                    base = _combine(
                        base, bspline_to_displacement(coeffs, shape, spacing), config.fold_free, level
                    )
            u = resize_field(base, fixed.shape).detach()
        return build_result(
            self.name,
            fixed,
            moving,
            u,
            timer=timer,
            device=device,
            config=replace(config, levels=len(factors)),  # the levels that ran
            loss_history=history,
        )


register_method(
    MethodSpec(
        name="bspline",
        title="B-spline FFD",
        config_cls=BSplineConfig,
        factory=BSplineMethod,
        family=Family.DEFORMABLE,
        dims=(2, 3),
        description="Cubic B-spline free-form deformation, hierarchical over 3 levels, any similarity "
        "(LNCC, MI, MIND, ...) plus bending energy, optimised with Adam; folding-free by construction (each "
        "level's control points kept under the injectivity bound, levels composed).",
    )
)
