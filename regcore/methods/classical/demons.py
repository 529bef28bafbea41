"""Diffeomorphic demons (Vercauteren et al., NeuroImage 2009) in torch, 2D and 3D.

Each iteration computes the demons force ``d = (F - W) J / (|J|^2 + (F - W)^2 / K)`` where
``W = moving o phi`` and ``J`` is the gradient of the fixed image ("passive"), of the warped
image ("active") or their mean ("symmetric", ESM forces). The update is smoothed by a
Gaussian of ``sigma_fluid`` voxels (fluid-like), exponentiated (scaling and squaring, so each
step is diffeomorphic) and composed: ``phi <- phi o exp(d)``; the displacement is then
smoothed by ``sigma_elastic`` voxels (diffusion-like). A voxel whose mapped point lies outside the moving
image gets no force (ITK's demons functions: the warped image only repeats the moving image's border there).
Multi-resolution: factors ``2**(levels-1) ... 1``, iterations per level from :func:`level_iterations`. Gaussians are
``regcore.spatial.smooth`` truncated at 2 sigma (``pyramid.TRUNCATE``); ``exp`` is
``regcore.spatial.svf.integrate_svf`` with the fewest squarings that bring the largest scaled update
below 0.5 voxel (``svf.squaring_steps``); composition is ``regcore.spatial.compose.compose``.

With intensity features the force assumes that aligned images have equal intensities: each image's MR bias field
is removed first (N4, ``bias_correction``: on the built-in sample pairs, whose subjects carry different coil shading,
Dice 0.855 -> 0.895 and the field error 0.81 -> 0.36 voxels; on the bias-corrected OASIS slices within 0.001,
benchmarks/results/bias_field.md) and the moving histogram is matched to the fixed one. Between contrasts that are
not equal up to a histogram mapping (``features``: chosen from the images by default,
:mod:`regcore.methods.classical.demons_features`) the force compares MIND-SSC descriptors instead of intensities,
summed over their channels (MIND demons); on the CPU the fused kernels take every channel.

Units: displacements ``(1, ndim, *S)`` in voxels of the fixed grid, fixed -> moving
(``warped = moving o (id + u)``). Intensities are min-max normalised to [0, 1] inside.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from regcore.bias_field import correct_bias
from regcore.config import param
from regcore.image import Image
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical import greedy_kernels
from regcore.methods.classical.demons_features import DemonsFeatures, choose_features, mind_features
from regcore.methods.classical.inputs import minmax, pick_device, validate_pair
from regcore.methods.classical.progress import LevelProgress
from regcore.methods.classical.pyramid import (
    TRUNCATE,
    downsample,
    halving_factors,
    level_shape,
    level_sigmas,
    resize_field,
)
from regcore.methods.classical.result import build_result
from regcore.methods.registry import Family, MethodSpec, register_method
from regcore.preprocess import histogram_match
from regcore.spatial import warp_kernels
from regcore.spatial.compose import compose
from regcore.spatial.smooth import gaussian_smooth
from regcore.spatial.svf import integrate_svf, squaring_steps
from regcore.spatial.warp import warp


class DemonsForce(enum.StrEnum):
    SYMMETRIC = "symmetric"
    PASSIVE = "passive"
    ACTIVE = "active"


@dataclass(frozen=True)
class DemonsConfig:
    levels: int = param(3, "Resolution levels (factor 2 each); 1 = full resolution only.", range=(1, 5))
    iterations: int | tuple[int, ...] = param(
        (),
        "Iterations per resolution level, coarse to fine: one number for every level, one per level "
        "(e.g. 100, 60, 20), or empty = auto: 50 per level; on 3D grids of more than 1M voxels 20 at full "
        "resolution, 60 at half and 100 at each coarser level (there a full-resolution iteration costs ~8x a "
        "half-resolution one; on the 1 mm OASIS pair this halves the time for 0.0005 Dice, "
        "benchmarks/README.md).",
        range=(1, 1000),
    )
    force: DemonsForce = param(
        DemonsForce.SYMMETRIC,
        "Demons force: symmetric (ESM, fixed+warped gradient), "
        "passive (fixed gradient) or active (warped gradient).",
    )
    sigma_elastic: float = param(
        1.0,
        "Gaussian smoothing of the displacement after each step (voxels; see smooth_in_mm; "
        "diffusion-like regularisation). 0 = none.",
        range=(0.0, 10.0),
        step=0.25,
    )
    sigma_fluid: float = param(
        0.5,
        "Gaussian smoothing of each update (voxels; see smooth_in_mm; fluid-like). 0 = none.",
        range=(0.0, 10.0),
        step=0.25,
    )
    smooth_in_mm: bool = param(
        False,
        "Smoothing widths in mm: on a thick-slice grid the slice axis is smoothed over the same width in mm as "
        "the finest axis, so over fewer voxels (as ITK with UseImageSpacing). Off: sigmas in voxels on every "
        "axis (as ANTs). Isotropic images are not affected. benchmarks/anisotropic.py compares the two.",
    )
    max_step: float = param(
        0.5,
        "Largest update per iteration (voxels of the current level); sets the "
        "demons normaliser K = 1 / (4 max_step^2), which bounds |d| <= max_step.",
        range=(0.1, 10.0),
        step=0.1,
        advanced=True,
    )
    diffeomorphic: bool = param(
        True, "Exponentiate each update (diffeomorphic demons); False = additive demons."
    )
    normalise: bool = param(
        True, "Min-max normalise both images to [0, 1] before registering.", advanced=True
    )
    bias_correction: bool = param(
        True,
        "Remove each image's MR intensity bias (N4, regcore.bias_field.correct_bias) first: the force compares "
        "intensities, and coil shading that differs between the two images reads as anatomy. Intensity "
        "features and non-negative images only (not CT in HU); ~0.1 s per 2D slice, ~0.4 s per 1 mm 3D brain.",
    )
    histogram_match: bool = param(
        True,
        "Match the moving image's histogram to the fixed one first (as SimpleITK's demons does); "
        "for images of the same contrast only (never with MIND features).",
    )
    features: DemonsFeatures = param(
        DemonsFeatures.AUTO,
        "What the force compares: intensity (same contrast), mind (MIND-SSC descriptors: different "
        "contrasts, e.g. MR and ultrasound, T1w and T2w; 12 channels in 3D, several times slower), or auto: "
        "mind unless the images' intensities correlate locally (5 mm windows) at 0.4 or more (one contrast).",
        choices=tuple(DemonsFeatures),
    )
    device: str = param(
        "auto", "Where to run: auto (CUDA when present), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )

    @property
    def iteration_counts(self) -> tuple[int, ...]:
        """``iterations`` as a tuple: () = auto, one count = every level, else one per level."""
        return self.iterations if isinstance(self.iterations, tuple) else (self.iterations,)

    def __post_init__(self) -> None:
        counts = self.iteration_counts
        if len(counts) > 1 and len(counts) != self.levels:
            raise ValueError(
                f"DemonsConfig.iterations gives {len(counts)} counts for {self.levels} levels: give one per "
                "level (coarse to fine), one for every level, or none (auto)"
            )


AUTO_ITERATIONS = (50,)
"""Auto iterations per level (coarse to fine; the last entry is full resolution, the first repeats on any
coarser level)."""
AUTO_ITERATIONS_LARGE = (100, 60, 20)
"""The same for 3D grids of more than :data:`LARGE_VOXELS`, where full-resolution iterations cost most."""
LARGE_VOXELS = 1_000_000


def level_iterations(config: DemonsConfig, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Iterations of each of ``config.levels`` levels, coarse to fine, for an image of ``shape`` voxels."""
    counts = config.iteration_counts
    if len(counts) == config.levels:
        return counts
    if len(counts) == 1:
        return counts * config.levels
    large = len(shape) == 3 and math.prod(shape) > LARGE_VOXELS
    auto = AUTO_ITERATIONS_LARGE if large else AUTO_ITERATIONS
    return ((auto[0],) * config.levels + auto)[-config.levels :]


def auto_settings(config: DemonsConfig, shape: tuple[int, ...], spacing: tuple[float, ...]) -> dict:
    """``{"iterations": per-level counts}`` when ``iterations`` is auto on an image of ``shape`` voxels, else {}."""
    return {} if config.iteration_counts else {"iterations": level_iterations(config, shape)}


def spatial_gradient(x: torch.Tensor) -> torch.Tensor:
    """Central differences of ``(B, 1, *S)`` -> ``(B, ndim, *S)`` (per voxel, replicate border)."""
    ndim = x.ndim - 2
    grads = []
    for axis in range(ndim):
        d = 2 + axis
        fwd = torch.cat([x.narrow(d, 1, x.shape[d] - 1), x.narrow(d, x.shape[d] - 1, 1)], dim=d)
        bwd = torch.cat([x.narrow(d, 0, 1), x.narrow(d, 0, x.shape[d] - 1)], dim=d)
        grads.append((fwd - bwd) / 2.0)
    return torch.cat(grads, dim=1)


def demons_step(
    fixed: torch.Tensor,
    warped: torch.Tensor,
    displacement: torch.Tensor,
    force: DemonsForce,
    max_step: float,
) -> torch.Tensor:
    """One demons force field ``(B, n, *S)`` (voxels) from ``(B, C, *S)`` images, ``|d| <= max_step``.

    ``displacement`` ``(B, n, *S)`` (voxels) is the field that made ``warped``: a voxel whose mapped point lies
    outside the moving image gets no force, as in ITK's demons functions (there ``warped`` repeats the moving
    image's border, and forces from it would drag the field further out: in image corners it grew to ~3x its
    size inside). With several channels (MIND descriptors) the numerator and both denominator terms are summed
    over channels (multichannel demons); one channel is the classic force.
    """
    n = fixed.ndim - 2
    k_inv = 1.0 / (4.0 * max_step**2)
    # With K = 1 / (4 max_step^2): |d| <= sqrt(A B) / (A + B K) <= 1 / (2 sqrt(K)) = max_step, where
    # A = sum_c |J_c|^2 and B = sum_c diff_c^2 (Cauchy-Schwarz over channels). One channel at a time: a
    # 12-channel 3D descriptor never needs its (n x 12)-channel gradient in memory.
    numer = torch.zeros((fixed.shape[0], n, *fixed.shape[2:]), dtype=fixed.dtype, device=fixed.device)
    denom = torch.zeros((fixed.shape[0], 1, *fixed.shape[2:]), dtype=fixed.dtype, device=fixed.device)
    for c in range(fixed.shape[1]):
        f, w = fixed[:, c : c + 1], warped[:, c : c + 1]
        diff = f - w
        if force == DemonsForce.PASSIVE:
            j = spatial_gradient(f)
        elif force == DemonsForce.ACTIVE:
            j = spatial_gradient(w)
        else:
            j = 0.5 * (spatial_gradient(f) + spatial_gradient(w))
        numer += diff * j
        denom += (j * j).sum(1, keepdim=True) + diff * diff * k_inv
    inside = maps_inside(displacement)
    return torch.where((denom > 1e-9) & inside, numer / denom.clamp_min(1e-9), torch.zeros_like(numer))


def maps_inside(displacement: torch.Tensor) -> torch.Tensor:
    """``(B, 1, *S)`` bool: voxels whose mapped point ``index + displacement`` (voxels) lies within the image,
    continuous index in ``[-0.5, n - 0.5]`` on every axis (ITK's ``IsInsideBuffer``)."""
    inside = torch.ones_like(displacement[:, :1], dtype=torch.bool)
    for axis, n in enumerate(displacement.shape[2:]):
        index = torch.arange(n, dtype=displacement.dtype, device=displacement.device)
        index = index.view(n, *([1] * (displacement.ndim - 3 - axis)))
        point = index + displacement[:, axis : axis + 1]
        inside &= (point >= -0.5) & (point <= n - 0.5)
    return inside


def _intensities_in(
    fixed: Image, moving: Image, config: DemonsConfig, features: DemonsFeatures
) -> tuple[Image, Image, bool]:
    """The images the force compares, and whether their bias was corrected: with intensity features, each image's
    N4 bias removed (``bias_correction``, non-negative images) and then the moving histogram matched to the fixed one
    (``histogram_match``, one-channel images; SimpleITK demons' settings). MIND descriptors are normalised locally:
    both images as given."""
    if features != DemonsFeatures.INTENSITY:
        return fixed, moving, False
    corrected = config.bias_correction and min(float(fixed.data.min()), float(moving.data.min())) >= 0
    if corrected:
        fixed, moving = correct_bias(fixed), correct_bias(moving)
    if config.histogram_match and fixed.data.shape[0] == moving.data.shape[0] == 1:
        moving = histogram_match(moving, fixed, match_points=15)
    return fixed, moving, corrected


def _reporter(ticker: LevelProgress, history: list, level: int, n_levels: int, n_iter: int):
    """Callback ``(iteration, mse_fn)``: every 10th (and the last) iteration logs the MSE and reports progress."""

    def report(it: int, mse_fn) -> None:
        if it % 10 == 0 or it == n_iter - 1:
            mse = float(mse_fn())
            history.append({"similarity": mse, "level": float(level)})
            ticker.tick(
                level, it, f"level {level + 1}/{n_levels}, iter {it + 1}/{n_iter}", force=True, similarity=mse
            )

    return report


def _iterate_torch(
    f: torch.Tensor, m: torch.Tensor, u: torch.Tensor, config: DemonsConfig, n_iter: int, report, sigmas
) -> torch.Tensor:
    """``n_iter`` demons iterations with torch ops (any device); returns the new ``u``.
    ``sigmas``: (fluid, elastic) smoothing, each one sigma per axis in voxels of this level."""
    for it in range(n_iter):
        w = warp(m, u)
        d = gaussian_smooth(demons_step(f, w, u, config.force, config.max_step), sigmas[0], truncate=TRUNCATE)
        u = compose(u, integrate_svf(d, steps=None)) if config.diffeomorphic else u + d
        u = gaussian_smooth(u, sigmas[1], truncate=TRUNCATE)
        report(it, lambda: ((f - w) ** 2).mean())
    return u


_FORCE_CODES = {DemonsForce.PASSIVE: 0, DemonsForce.ACTIVE: 1, DemonsForce.SYMMETRIC: 2}


def _iterate_compiled(
    f: torch.Tensor, m: torch.Tensor, u: torch.Tensor, config: DemonsConfig, n_iter: int, report, sigmas
) -> torch.Tensor:
    """The same iterations as :func:`_iterate_torch` with the fused numba kernels of ``greedy_kernels``
    on buffers allocated once per level (CPU float32)."""
    spatial = tuple(f.shape[2:])
    ws = greedy_kernels.GreedyWorkspace(spatial)
    fixed, moving = f[0].contiguous().numpy(), m[0].contiguous().numpy()
    field = u[0].contiguous().numpy()  # this level's own field (zeros / resize_field): updated in place
    update, spare = np.empty_like(field), np.empty_like(field)
    warped = np.empty_like(moving)
    mode = _FORCE_CODES[DemonsForce(config.force)]
    for it in range(n_iter):
        warp_kernels.resample(moving, field, warped, "bilinear", "border", torch.get_num_threads())
        ws.demons_force(fixed, warped, field, mode, config.max_step, update)
        ws.smooth(update, sigmas[0], scratch=spare)  # spare is free until compose writes it
        if config.diffeomorphic:
            steps = squaring_steps(ws.max_norm(update))  # 0 whenever max_step <= 0.5: exp(d) = d, no copy
            exp_update = (
                update if steps == 0 else integrate_svf(torch.from_numpy(update)[None], steps)[0].numpy()
            )
            ws.compose(field, exp_update, spare)  # phi <- phi o exp(update)
            field, spare = spare, field
        else:
            field += update
        ws.smooth(field, sigmas[1], scratch=update)  # the update is spent
        report(it, lambda: _mean_squared_difference(fixed, warped))
    return torch.from_numpy(field)[None]


def _mean_squared_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of ``(a - b)^2`` over ``(C, *S)`` arrays, one channel at a time (no full-size 12-channel temporaries
    for MIND descriptors: 2 x 236 MiB at 1 mm)."""
    return float(np.mean([np.mean(np.square(a[c] - b[c]), dtype=np.float64) for c in range(a.shape[0])]))


class DemonsMethod:
    """Diffeomorphic / additive demons; see module docstring."""

    name = "demons"

    def register(
        self, fixed: Image, moving: Image, config: DemonsConfig, progress=None
    ) -> RegistrationResult:
        validate_pair(fixed, moving)
        device = pick_device(config.device, fixed)
        factors = halving_factors(config.levels)
        iterations = level_iterations(config, tuple(fixed.shape))
        ticker = LevelProgress(progress, iterations, report_every=10)
        history: list[dict[str, float]] = []
        with Timer(device) as timer, torch.no_grad():
            features = choose_features(
                config.features, fixed.batch()[:, :1], moving.batch()[:, :1], fixed.spacing
            )
            fixed_in, moving_in, corrected = _intensities_in(fixed, moving, config, features)
            f0 = fixed_in.batch().to(device)[:, :1]
            m0 = moving_in.batch().to(device)[:, :1]
            if config.normalise or features == DemonsFeatures.MIND:
                f0, m0 = minmax(f0), minmax(m0)
            if features == DemonsFeatures.MIND:
                f0, m0 = mind_features(f0, fixed.spacing), mind_features(m0, fixed.spacing)
            u = torch.zeros(
                1, fixed.ndim, *level_shape(fixed.shape, factors[0], fixed.spacing), device=device
            )
            for level, factor in enumerate(factors):
                f, m = downsample(f0, factor, fixed.spacing), downsample(m0, factor, fixed.spacing)
                u = resize_field(u, f.shape[2:])
                report = _reporter(ticker, history, level, len(factors), iterations[level])
                sigmas = tuple(
                    level_sigmas(sigma, factor, fixed.ndim, fixed.spacing if config.smooth_in_mm else None)
                    for sigma in (config.sigma_fluid, config.sigma_elastic)
                )
                compiled = greedy_kernels.AVAILABLE and f.device.type == "cpu" and f.dtype == torch.float32
                if compiled:
                    u = _iterate_compiled(f, m, u, config, iterations[level], report, sigmas)
                else:
                    u = _iterate_torch(f, m, u, config, iterations[level], report, sigmas)
        # What ran, not "auto" (and no bias correction where it did not apply).
        ran = replace(config, iterations=iterations, features=features, bias_correction=corrected)
        return build_result(
            self.name, fixed, moving, u, timer=timer, device=device, config=ran, loss_history=history
        )


register_method(
    MethodSpec(
        name="demons",
        title="Diffeomorphic demons",
        config_cls=DemonsConfig,
        factory=DemonsMethod,
        family=Family.DIFFEOMORPHIC,
        dims=(2, 3),
        auto_settings=auto_settings,
        description="Vercauteren's diffeomorphic demons with symmetric (ESM) forces, Gaussian fluid/elastic "
        "smoothing, N4 bias correction, histogram matching and a multi-resolution pyramid; between different "
        "contrasts (MR/ultrasound, T1w/T2w, chosen from the images) it compares MIND-SSC descriptors instead "
        "(MIND demons). The default deformable method in 2D.",
    )
)

__all__ = [
    "AUTO_ITERATIONS",
    "AUTO_ITERATIONS_LARGE",
    "DemonsConfig",
    "DemonsForce",
    "DemonsMethod",
    "LARGE_VOXELS",
    "auto_settings",
    "demons_step",
    "maps_inside",
    "level_iterations",
    "spatial_gradient",
]
