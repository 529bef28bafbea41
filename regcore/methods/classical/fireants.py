"""FireANTs-style greedy diffeomorphic registration (after Jena et al., "FireANTs", 2024).

Per level (coarse to fine, most iterations at coarse levels), per iteration:

1. ``W = moving o (id + u)``; similarity gradient ``dL/dW`` (box LNCC: analytic, exact; other
   similarities: autograd with respect to the warped image only, never through the resampler).
2. Update direction ``g = dL/dW * grad(W)``: the gradient of ``L(moving o phi o (id + s))`` with
   respect to a small update ``s`` at ``s = 0``; Gaussian smoothing of ``g`` (fluid-like).
3. Step rule (``optimizer``): Adam moments on ``g`` and ``s = -step_size * d / max(1, max |d|)``, so no
   voxel moves more than ``step_size`` voxels of the current level (FireANTs); or ANTs SyN's gradient step
   ``s = -step_size * g / max |g|``: every voxel moves in proportion to its force, the largest by
   ``step_size`` (no per-voxel normalisation: weak forces in flat regions stay weak, the field smoother).
4. Compositive update ``phi <- phi o (id + s)``, i.e. ``u <- s + u o (id + s)``, then Gaussian
   smoothing of ``u`` (elastic-like). Small composed steps keep the map invertible (~0 % folding).

The similarity is chosen from the images unless set (``similarity="auto"``,
:mod:`regcore.methods.classical.contrast`): box LNCC for one contrast, MIND-SSC between two (T1w/T2w,
MR/ultrasound, two stains), where LNCC pulls edges onto the wrong edges. MIND-SSC descriptors of each image are
taken once (``demons_features.mind_features``), warped as channels and compared by their mean squared difference,
whose gradient is exact and cheap (as MIND demons and deeds do); describing the warped image at every iteration
(``MINDLoss``) cost 123 s and 5.2 GB on a 1 mm 3D pair, this 32 s and 2.9 GB (``benchmarks/README.md``).

Displacement convention: ``u`` ``(1, ndim, *S)`` in fixed voxels, fixed -> moving.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from regcore.config import param
from regcore.image import Image
from regcore.losses import Similarity, make_similarity
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical import greedy_kernels
from regcore.methods.classical.contrast import resolve_similarity, similarity_param
from regcore.methods.classical.demons_features import mind_features
from regcore.methods.classical.filters import image_gradient
from regcore.methods.classical.fireants_schedule import auto_settings, resolve_preset
from regcore.methods.classical.inputs import minmax, pair_tensors, pick_device, validate_pair
from regcore.methods.classical.lncc import lncc_and_gradient
from regcore.methods.classical.progress import LevelProgress
from regcore.methods.classical.pyramid import (
    TRUNCATE,
    downsample,
    level_shape,
    level_sigmas,
    resize_field,
    validate_schedule,
)
from regcore.methods.classical.result import build_result
from regcore.methods.registry import Family, MethodSpec, register_method
from regcore.spatial import warp_kernels
from regcore.spatial.lengths import max_vector_length
from regcore.spatial.smooth import gaussian_smooth
from regcore.spatial.warp import warp

MIND_FIELD_SMOOTHING = 3.0
"""With ``preset="auto"``, the field's smoothing (``smooth_warp_sigma``) is this many times wider when MIND-SSC
descriptors are compared: their per-voxel forces are rougher than LNCC's. Chosen on the stain pairs' tune seeds
(x1, x2, x3: TRE 4.98, 2.97, 2.33 px, SDlogJ 0.77, 0.31, 0.17); held out, x1 -> x3: stains 7.35 -> 5.00 px, CIMA
histology 12.79 -> 9.61 px, 3D spine cord Dice 0.745 -> 0.766, prostate 0.619 -> 0.623, SDlogJ 0.73-0.92 -> 0.15-0.26
(``benchmarks/README.md``, 2026-12-05, descriptors 2 voxels wide). With the descriptors at 1 mm
(:func:`regcore.losses.mind.mind_scale`) x3 stayed best on the tune seeds (scratch runs: x2 2.53, x3 2.04,
x4 2.11 px)."""


def field_sigma(config: FireANTsConfig, similarity: str) -> float:
    """The field smoothing (voxels) fireants runs under ``config`` once its similarity resolves to ``similarity``:
    ``smooth_warp_sigma``, :data:`MIND_FIELD_SMOOTHING` times wider with preset auto and MIND."""
    wider = config.preset == "auto" and similarity == Similarity.MIND
    return (MIND_FIELD_SMOOTHING if wider else 1.0) * config.smooth_warp_sigma


class StepRule(enum.StrEnum):
    ADAM = "adam"
    GRADIENT = "gradient"


@dataclass(frozen=True)
class FireANTsConfig:
    similarity: str = similarity_param()
    preset: str = param(
        "auto",
        "auto: a schedule chosen from the image (up to 3 levels, each coarse level at least 24 voxels "
        "across; thick-slice axes shrink toward isotropic voxels, not by the full factor; 3D: iterations "
        "(100, 50, 10), step 1.0, update sigma 0.875, window 7; 2D: iterations (100, 80, 50), step 0.5, "
        "update sigma 1.0, window 11); custom: use the five fields below.",
        choices=("auto", "custom"),
    )
    window: int = param(
        5,
        "Local window in voxels at every level (odd; lncc, lncc_gauss, ssim) (preset=custom).",
        range=(3, 15),
        step=2,
    )
    levels: tuple[int, ...] = param((4, 2, 1), "Downsampling factors, coarse to fine (preset=custom).")
    iterations: tuple[int, ...] = param(
        (100, 50, 20), "Iterations per level, most at coarse levels (preset=custom)."
    )
    step_size: float = param(
        1.0,
        "Largest voxel displacement of one update, in voxels of the current level (preset=custom).",
        range=(0.01, 5.0),
        step=0.05,
    )
    smooth_grad_sigma: float = param(
        0.75,
        "Gaussian sigma (voxels; see smooth_in_mm) applied to each update: fluid regularisation (preset=custom).",
        range=(0.0, 5.0),
        step=0.25,
    )
    max_level_voxels: int = param(
        20_000_000,
        "Levels whose grid has more voxels are skipped (the field of the "
        "previous level is upsampled). The default runs a 1 mm brain (7M voxels) at full "
        "resolution; lower it to trade accuracy for speed and memory (a 7M-voxel level "
        "costs ~0.6 s per iteration on 2 CPU cores; whole 3D run peaks at ~1 GB).",
        range=(1_000, 1_000_000_000),
    )
    smooth_in_mm: bool = param(
        False,
        "Smoothing widths in mm: on a thick-slice grid the slice axis is smoothed over the same width in mm as "
        "the finest axis, so over fewer voxels (as ITK with UseImageSpacing). Off: sigmas in voxels on every "
        "axis (as ANTs). Isotropic images are not affected. benchmarks/anisotropic.py compares the two.",
    )
    smooth_warp_sigma: float = param(
        0.5,
        "Gaussian sigma (voxels; see smooth_in_mm) applied to the field after each update: elastic regularisation "
        "(with preset auto, 3x wider when MIND descriptors are compared).",
        range=(0.0, 5.0),
        step=0.25,
    )
    optimizer: StepRule = param(
        StepRule.GRADIENT,
        "Step rule: gradient (ANTs SyN: the smoothed gradient scaled so its largest vector moves step_size "
        "voxels) or adam (FireANTs: per-voxel Adam steps, which also push voxels with weak forces). On the 2D "
        "tune slices gradient gave higher Dice (0.719 vs 0.713) and smoother fields (SDlogJ 0.41 vs 0.50).",
    )
    lncc_eps: float = param(
        1e-5,
        "Floor on the local variances of box LNCC, relative to the intensity range squared (each image is min-max "
        "scaled to [0, 1] first, as in FireANTs): windows flatter than this get weaker forces. Keep it small: the "
        "range of a CT (~4000 HU) makes 1e-3 a floor of 126 HU std, above soft-tissue contrast.",
        range=(1e-8, 1e-1),
        advanced=True,
    )
    beta1: float = param(0.9, "Adam first-moment decay.", range=(0.0, 0.999), advanced=True)
    beta2: float = param(0.99, "Adam second-moment decay.", range=(0.0, 0.9999), advanced=True)
    device: str = param(
        "auto", "Device: auto (CUDA when available), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )


def _similarity_gradient(
    sim_name: str, sim_module, fixed: torch.Tensor, warped: torch.Tensor, window: int, lncc_eps: float
) -> tuple[float, torch.Tensor]:
    """Loss value and ``dL/dwarped`` ``(1, C, *S)``."""
    if sim_name == Similarity.LNCC:
        losses, grads = [], []
        for c in range(fixed.shape[1]):
            loss, grad = lncc_and_gradient(fixed[:, c : c + 1], warped[:, c : c + 1], window, lncc_eps)
            losses.append(loss)
            grads.append(grad / fixed.shape[1])
        return float(sum(losses) / len(losses)), torch.cat(grads, 1)
    if sim_name == Similarity.MSE:  # mean of (W - F)^2 over voxels and channels: gradient by formula
        diff = warped - fixed
        return float(torch.linalg.vector_norm(diff) ** 2) / diff.numel(), diff.mul_(2.0 / diff.numel())
    w = warped.detach().requires_grad_(True)
    with torch.enable_grad():
        value = sim_module(fixed, w)
        (grad,) = torch.autograd.grad(value, w)
    return float(value), grad


class _Adam:
    """Adam moments for a displacement-shaped update; ``direction(g)`` -> bias-corrected step direction."""

    def __init__(self, like: torch.Tensor, beta1: float, beta2: float, eps: float = 1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.beta1, self.beta2, self.eps, self.t = beta1, beta2, eps, 0

    def resize(self, shape) -> None:
        self.m = resize_field(self.m, shape) if self.m.shape[2:] != tuple(shape) else self.m
        self.v = resize_field(self.v, shape).clamp_min(0) if self.v.shape[2:] != tuple(shape) else self.v

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        return m_hat / (v_hat.sqrt() + self.eps)


class _GradientStep:
    """ANTs SyN's step rule: ``direction(g)`` is ``g / max |g|`` (the caller scales it by ``-step_size``)."""

    def resize(self, shape) -> None:
        pass

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / max_vector_length(grad).clamp_min(1e-12)


def _iteration_reporter(
    history: list | None, tracker: LevelProgress, level: int, n_levels: int, factor: int, n_iter: int
):
    """Callback ``(iteration, loss)`` that records the loss history and reports progress (may cancel)."""

    def report(it: int, loss: float) -> None:
        if history is not None:
            history.append({"similarity": loss, "level": float(level)})
        tracker.tick(
            level, it, f"level {level + 1}/{n_levels} (x{factor}), iter {it + 1}/{n_iter}", similarity=loss
        )

    return report


def _can_use_compiled(sim_name: str, fixed: torch.Tensor) -> bool:
    """The fused numba iteration covers box LNCC on one-channel float32 CPU images."""
    return (
        greedy_kernels.AVAILABLE
        and sim_name == Similarity.LNCC
        and fixed.device.type == "cpu"
        and fixed.dtype == torch.float32
        and fixed.shape[1] == 1
    )


def update_direction(d_warped: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    """``sum_c dL/dW_c * grad(W_c)`` ``(1, ndim, *S)``: the loss gradient with respect to a small displacement
    update, from ``dL/dwarped`` and ``warped`` ``(1, C, *S)`` (every channel contributes through its own gradient)."""
    return sum(
        (d_warped[:, c : c + 1] * image_gradient(warped[:, c : c + 1]) for c in range(warped.shape[1])),
        torch.zeros((), dtype=warped.dtype, device=warped.device),
    )


def _iterate_torch(
    f_l, m_l, u, stepper, config, n_iter, sim_name, sim_module, on_iteration, sigmas
) -> torch.Tensor:
    """``n_iter`` greedy iterations with torch ops (any device, any similarity); returns the new ``u``.
    ``sigmas``: (gradient, field) smoothing, each one sigma per axis in voxels of this level."""
    for it in range(n_iter):
        warped = warp(m_l, u)
        loss, d_warped = _similarity_gradient(
            sim_name, sim_module, f_l, warped, config.window, config.lncc_eps
        )
        grad = update_direction(d_warped, warped)
        grad = gaussian_smooth(grad, sigmas[0], truncate=TRUNCATE)
        d = stepper.direction(grad)
        d_max = max_vector_length(d).clamp_min(1.0)
        step = d * (-config.step_size / d_max)
        u = step + warp(u, step)
        u = gaussian_smooth(u, sigmas[1], truncate=TRUNCATE)
        on_iteration(it, loss)
    return u


def _iterate_compiled(f_l, m_l, u, stepper, config, n_iter, on_iteration, sigmas) -> torch.Tensor:
    """The same iterations as :func:`_iterate_torch` (box LNCC) with fused numba kernels on
    buffers allocated once per level (``greedy_kernels``); ~5x faster at full 3D resolution."""
    spatial = tuple(f_l.shape[2:])
    ws = greedy_kernels.GreedyWorkspace(spatial)
    fixed = f_l[0].contiguous().numpy()
    moving = m_l[0].contiguous().numpy()
    # ``u`` is this level's own field (fresh from zeros / resize_field): updated in place, no copy
    field, spare = u[0].contiguous().numpy(), np.empty((len(spatial), *spatial), np.float32)
    if isinstance(stepper, _Adam):
        stepper.m, stepper.v = stepper.m.contiguous(), stepper.v.contiguous()
        m, v = stepper.m[0].numpy(), stepper.v[0].numpy()
    warped = np.empty_like(moving)
    force = np.empty_like(field)
    for it in range(n_iter):
        warp_kernels.resample(moving, field, warped, "bilinear", "border", torch.get_num_threads())
        loss = ws.lncc_force(fixed, warped, config.window, force, config.lncc_eps)
        ws.smooth(force, sigmas[0], scratch=spare)  # spare is free until compose writes it
        if isinstance(stepper, _Adam):
            stepper.t += 1
            ws.adam_step(force, m, v, stepper.t, stepper.beta1, stepper.beta2, config.step_size, stepper.eps)
        else:
            ws.gradient_step(force, config.step_size)
        ws.compose(field, force, spare)
        field, spare = spare, field
        ws.smooth(field, sigmas[1], scratch=force)  # force is spent until the next iteration
        on_iteration(it, loss)
    return torch.from_numpy(field)[None]


def greedy_displacement(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    config: FireANTsConfig,
    progress=None,
    history: list | None = None,
    spacing: tuple[float, ...] | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the greedy multi-level optimisation on ``(1, C, *S)`` tensors; returns ``u`` ``(1, ndim, *S)``
    (fixed voxels, fixed -> moving) at full resolution. ``spacing`` (mm per axis): anisotropic pyramid.
    ``init``: a starting displacement ``(1, ndim, *S)`` (full-resolution voxels, e.g. a network's field);
    default identity. Each image is min-max scaled to [0, 1] first (``config.lncc_eps`` is relative to that)."""
    levels, iterations = validate_schedule(config.levels, config.iterations)
    ndim = fixed.ndim - 2
    # LNCC ignores the intensity scale but not its variance floor: on [0, 1] images lncc_eps means the same for
    # a 0-255 photograph and a 0-1 MRI
    fixed, moving = minmax(fixed), minmax(moving)
    mm = spacing or (1.0,) * ndim
    sim_name = resolve_similarity(str(config.similarity), fixed, moving, mm)
    if sim_name == Similarity.MIND:  # descriptors once, compared as channels (module docstring)
        fixed, moving = mind_features(fixed[:, :1], mm), mind_features(moving[:, :1], mm)
        sim_name = Similarity.MSE
    sim_module = (
        None if sim_name == Similarity.LNCC else make_similarity(sim_name, ndim, window=config.window)
    )
    tracker = LevelProgress(progress, iterations)
    u = None
    stepper = None
    for level, (factor, n_iter) in enumerate(zip(levels, iterations)):
        if u is not None and (
            n_iter == 0 or math.prod(level_shape(fixed.shape[2:], factor, spacing)) > config.max_level_voxels
        ):
            continue  # too large for the budget (or nothing to do): the coarser field is upsampled at the end
        f_l, m_l = downsample(fixed, factor, spacing), downsample(moving, factor, spacing)
        shape = tuple(f_l.shape[2:])
        if u is None:
            if init is None:
                u = torch.zeros(1, ndim, *shape, device=fixed.device, dtype=fixed.dtype)
            else:
                u = resize_field(init.to(fixed), shape)
                if u.data_ptr() == init.data_ptr():  # same grid: the levels update u in place, init must stay
                    u = u.clone()
            adam = StepRule(config.optimizer) == StepRule.ADAM
            stepper = _Adam(u, config.beta1, config.beta2) if adam else _GradientStep()
        else:
            u = resize_field(u, shape)
            stepper.resize(shape)
        on_iteration = _iteration_reporter(history, tracker, level, len(levels), factor, n_iter)
        sigmas = tuple(
            level_sigmas(sigma, factor, ndim, spacing if config.smooth_in_mm else None)
            for sigma in (config.smooth_grad_sigma, config.smooth_warp_sigma)
        )
        if _can_use_compiled(sim_name, f_l):
            u = _iterate_compiled(f_l, m_l, u, stepper, config, n_iter, on_iteration, sigmas)
        else:
            u = _iterate_torch(
                f_l, m_l, u, stepper, config, n_iter, sim_name, sim_module, on_iteration, sigmas
            )
    if u is None or u.shape[2:] != fixed.shape[2:]:
        u = resize_field(u, tuple(fixed.shape[2:]))
    return u


class FireANTsMethod:
    """Greedy compositive diffeomorphic registration (see module docstring)."""

    name = "fireants"

    def register(
        self, fixed: Image, moving: Image, config: FireANTsConfig | None = None, progress=None
    ) -> RegistrationResult:
        chosen = config or FireANTsConfig()
        validate_pair(fixed, moving)
        config = resolve_preset(chosen, tuple(fixed.shape), fixed.spacing)
        device = pick_device(config.device, fixed)
        history: list[dict[str, float]] = []
        with Timer(device) as timer, torch.no_grad():
            f, m = pair_tensors(fixed, moving, device)
            similarity = resolve_similarity(config.similarity, f, m, fixed.spacing)
            config = replace(config, similarity=similarity)
            config = replace(config, smooth_warp_sigma=field_sigma(chosen, similarity))
            u = greedy_displacement(f, m, config, progress, history, fixed.spacing)
        ran = replace(config, preset=chosen.preset)  # the record: what ran, under the preset chosen
        return build_result(
            self.name, fixed, moving, u, timer=timer, device=device, config=ran, loss_history=history
        )


SPEC = register_method(
    MethodSpec(
        name="fireants",
        title="FireANTs-style greedy (diffeomorphic)",
        config_cls=FireANTsConfig,
        factory=FireANTsMethod,
        family=Family.DIFFEOMORPHIC,
        auto_settings=auto_settings,
        description="Multi-scale greedy compositive updates (ANTs SyN's gradient steps, or FireANTs' Adam steps), "
        "Gaussian smoothing of update and field; LNCC between images of one contrast, MIND-SSC descriptors between "
        "two (chosen from the images). Fast and accurate; the default deformable method in 3D.",
    )
)
