"""Intensity-based affine registration: multi-resolution Adam on transform parameters.

Registered as ``"affine"`` (12 dof in 3D, 6 in 2D); ``rigid.py`` registers ``"rigid"`` (6 / 3 dof) on
the same optimiser, whose config has a ``transform`` choice so a user can still switch.

Parametrisation (well conditioned for Adam): points are taken to millimetres (``p = spacing * x``),
centred on the fixed image centre ``c`` and divided by ``L`` = half the largest extent (mm), so a
rotation is a real rotation even for anisotropic voxels and translation units are comparable with
matrix entries. ``q = R(theta) p + t`` (rigid) or ``q = (I + M) p + t`` (affine), then back to
moving voxels. Initialised at the centres of mass (``regcore.spatial.affine.moments_init``).
The result's ``affine`` is the ``(ndim, ndim+1)`` voxel matrix fixed voxel -> moving voxel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from regcore.config import param
from regcore.image import Image
from regcore.losses import Similarity, make_similarity
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical.inputs import pair_tensors, pick_device, validate_pair
from regcore.methods.classical.progress import LevelProgress
from regcore.methods.classical.pyramid import downsample, validate_schedule
from regcore.methods.classical.result import build_result
from regcore.methods.registry import Family, MethodSpec, register_method
from regcore.spatial.affine import affine_to_displacement, moments_init, rotation_matrix
from regcore.spatial.grid import affine_to_normalised


class TransformKind(enum.StrEnum):
    RIGID = "rigid"
    AFFINE = "affine"


@dataclass(frozen=True)
class AffineConfig:
    transform: TransformKind = param(
        TransformKind.AFFINE, "Rigid (rotation + translation) or full affine.", choices=TransformKind
    )
    similarity: Similarity = param(
        Similarity.MI,
        "Similarity; MI (default) also works across modalities, NCC/MSE for the same contrast.",
        choices=Similarity,
    )
    window: int = param(7, "Local window in voxels (lncc, lncc_gauss, ssim).", range=(3, 21), step=2)
    levels: tuple[int, ...] = param((4, 2), "Downsampling factors, coarse to fine.")
    iterations: tuple[int, ...] = param((150, 60), "Adam iterations per level.")
    learning_rate: float = param(
        0.01,
        "Adam learning rate (normalised units: 1 = half the image extent, radians for angles).",
        range=(1e-4, 0.5),
        step=0.001,
    )
    init: str = param(
        "centre_of_mass",
        "Initialisation: centre_of_mass (moments) or identity.",
        choices=("centre_of_mass", "identity"),
    )
    device: str = param(
        "auto", "Device: auto (CUDA when available), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )


class _Frame:
    """Normalised-mm frame of a grid: ``p = (spacing * x - c) / L`` and back."""

    def __init__(self, shape, spacing, device, dtype=torch.float32):
        self.n = len(shape)
        self.s = torch.tensor(spacing, device=device, dtype=dtype)
        self.c = self.s * (torch.tensor(shape, device=device, dtype=dtype) - 1) / 2
        self.scale = float(max(self.s[i].item() * (shape[i] - 1) for i in range(self.n)) / 2 or 1.0)

    def voxel_matrix(self, linear: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``q = linear p + t`` in the frame -> ``(n, n+1)`` voxel matrix (fixed voxel -> moving voxel)."""
        a = linear * self.s.view(1, -1) / self.s.view(-1, 1)  # S^-1 R S
        offset = (self.c - linear @ self.c + self.scale * t) / self.s  # S^-1 (c - R c + L t)
        return torch.cat([a, offset[:, None]], 1)

    def translation_from_voxels(self, t_vox: torch.Tensor) -> torch.Tensor:
        """Frame translation whose identity-linear voxel matrix translates by ``t_vox`` voxels."""
        return self.s * t_vox / self.scale


def _matrix(kind: TransformKind, params: dict, frame: _Frame) -> torch.Tensor:
    n = frame.n
    if kind == TransformKind.RIGID:
        linear = rotation_matrix(params["angles"][None])[0]
    else:
        linear = torch.eye(n, device=params["t"].device) + params["linear"]
    return frame.voxel_matrix(linear, params["t"])


def _warp_affine(moving: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``moving o A`` for a voxel matrix ``(n, n+1)`` on the same grid."""
    shape = tuple(moving.shape[2:])
    theta = affine_to_normalised(matrix[None], shape)
    grid = F.affine_grid(theta, [1, 1, *shape], align_corners=True)
    return F.grid_sample(moving, grid, mode="bilinear", padding_mode="border", align_corners=True)


def optimise_affine(
    f: torch.Tensor,
    m: torch.Tensor,
    spacing: tuple[float, ...],
    *,
    kind: TransformKind,
    similarity,
    levels: tuple[int, ...],
    iterations: tuple[int, ...],
    learning_rate: float,
    init: str = "centre_of_mass",
    history: list[dict[str, float]] | None = None,
    tracker: LevelProgress | None = None,
) -> torch.Tensor:
    """Multi-resolution Adam on rigid/affine parameters (module docstring) aligning ``m`` to ``f``.

    ``f``, ``m``: ``(1, C, *S)`` on one grid of voxel size ``spacing`` (mm); any channel count
    (images or learned representations). ``similarity(f, warped)`` is minimised. ``init`` is
    ``"centre_of_mass"`` (moments of ``f`` and ``m``, intensities must be >= 0) or ``"identity"``.
    Returns the ``(n, n+1)`` voxel matrix fixed voxel -> moving voxel (detached); appends
    ``{"similarity", "level"}`` per step to ``history``.
    """
    ndim = f.ndim - 2
    shape = tuple(f.shape[2:])
    device = f.device
    frame = _Frame(shape, spacing, device)
    t0 = torch.zeros(ndim, device=device)
    if init == "centre_of_mass":
        t0 = frame.translation_from_voxels(moments_init(f, m)[0, :, ndim].float())
    elif init != "identity":
        raise ValueError(f"init must be 'centre_of_mass' or 'identity', got {init!r}")
    params = {"t": t0.clone().requires_grad_(True)}
    if kind == TransformKind.RIGID:
        params["angles"] = torch.zeros(1 if ndim == 2 else 3, device=device, requires_grad=True)
    else:
        params["linear"] = torch.zeros(ndim, ndim, device=device, requires_grad=True)
    optimiser = torch.optim.Adam(list(params.values()), lr=learning_rate)
    for level, (factor, n_iter) in enumerate(zip(levels, iterations)):
        f_l, m_l = downsample(f, factor, spacing), downsample(m, factor, spacing)
        frame_l = _Frame(
            tuple(f_l.shape[2:]),
            tuple(sp * (s - 1) / max(sl - 1, 1) for sp, s, sl in zip(spacing, shape, f_l.shape[2:])),
            device,
        )
        for it in range(n_iter):
            optimiser.zero_grad(set_to_none=True)
            loss = similarity(f_l, _warp_affine(m_l, _matrix(kind, params, frame_l)))
            loss.backward()
            optimiser.step()
            value = loss.item()
            if history is not None:
                history.append({"similarity": value, "level": float(level)})
            if tracker is not None:
                tracker.tick(
                    level,
                    it,
                    f"level {level + 1}/{len(levels)} (x{factor}), iter {it + 1}/{n_iter}",
                    similarity=value,
                )
    with torch.no_grad():
        return _matrix(kind, params, frame).detach()


class AffineMethod:
    """Multi-resolution intensity-based rigid/affine registration (see module docstring); the
    transform kind comes from the config, ``name`` and ``config_cls`` label the method."""

    name = "affine"
    config_cls = AffineConfig

    def register(
        self, fixed: Image, moving: Image, config: AffineConfig | None = None, progress=None
    ) -> RegistrationResult:
        config = config or self.config_cls()
        ndim = validate_pair(fixed, moving)
        levels, iterations = validate_schedule(config.levels, config.iterations)
        device = pick_device(config.device, fixed)
        kind = TransformKind(str(config.transform))
        history: list[dict[str, float]] = []
        with Timer(device) as timer:
            f, m = pair_tensors(fixed, moving, device)
            with torch.enable_grad():
                matrix = optimise_affine(
                    f,
                    m,
                    fixed.spacing,
                    kind=kind,
                    similarity=make_similarity(config.similarity, ndim, window=config.window),
                    levels=levels,
                    iterations=iterations,
                    learning_rate=config.learning_rate,
                    init=config.init,
                    history=history,
                    tracker=LevelProgress(progress, iterations),
                )
            u = affine_to_displacement(matrix[None], fixed.shape)
        return build_result(
            self.name,
            fixed,
            moving,
            u,
            timer=timer,
            device=device,
            config=config,
            loss_history=history,
            affine=matrix,
        )


SPEC_AFFINE = register_method(
    MethodSpec(
        name="affine",
        title="Affine (intensity-based)",
        config_cls=AffineConfig,
        factory=AffineMethod,
        family=Family.AFFINE,
        description="12-parameter (3D) affine by multi-resolution Adam; MI by default, centre-of-mass initialisation.",
    )
)
