"""Random smooth diffeomorphisms for synthetic subjects, and their exact-ish inverses.

A synthetic subject i is ``subject_i = template o psi_i``: ``psi_i`` maps a voxel x of the
subject grid to the template voxel it shows. All subjects of a sample set share one grid,
so every field here is a displacement ``(1, ndim, *S)`` in VOXELS of that grid, component i
along tensor axis i (regcore's convention), and ``psi(x) = x + w(x)``.

``psi = affine o exp(v)``: a small random affine about the grid centre after a stationary
velocity field integrated by scaling and squaring. The velocity is drawn on a coarse
control grid in millimetres (resolution-independent: the same parameters give the same
deformation at 1 mm and at 2 mm) and upsampled linearly.

The sample data's ground truth is recomputed from :class:`SubjectTransform` parameters at
load time with ``regcore.spatial.svf.integrate_svf`` and a pinned :data:`SQUARING_STEPS`, the
same code that made the images; ``tests/test_data_pairs.py`` pins that integrator against an
independent scipy scaling-and-squaring, so a change there cannot silently move the sample data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from regcore.spatial.grid import identity_grid
from regcore.spatial.lengths import max_vector_length
from regcore.spatial.svf import integrate_svf
from regcore.spatial.warp import warp

SQUARING_STEPS = 7
"""Squarings of the sample subjects' velocity fields (part of the sample data's definition)."""


@dataclass(frozen=True)
class SubjectTransform:
    """Parameters of ``psi = affine o exp(v)`` (subject voxel -> template voxel).

    Attributes:
        control_velocity_mm: ``(ndim, *C)`` velocity on a coarse control grid spanning the
            field of view corner to corner, in mm per tensor axis.
        affine: ``(ndim, ndim+1)`` map in mm about the grid centre: ``y = M (x - c) + c + t``
            with x, c in mm along tensor axes (voxel index * spacing).
    """

    control_velocity_mm: np.ndarray
    affine: np.ndarray

    @property
    def ndim(self) -> int:
        return self.control_velocity_mm.shape[0]

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + "control_velocity_mm": self.control_velocity_mm, prefix + "affine": self.affine}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> SubjectTransform:
        return cls(
            np.asarray(arrays[prefix + "control_velocity_mm"], dtype=np.float64),
            np.asarray(arrays[prefix + "affine"], dtype=np.float64),
        )

    def forward_displacement(self, shape: tuple[int, ...], spacing: tuple[float, ...]) -> torch.Tensor:
        """Dense ``w`` ``(1, ndim, *shape)`` float32 voxels with ``psi(x) = x + w(x)`` on the given grid."""
        if len(shape) != self.ndim or len(spacing) != self.ndim:
            raise ValueError(f"shape {shape} and spacing {spacing} must have {self.ndim} entries")
        sp = torch.tensor(spacing, dtype=torch.float32).view(1, -1, *([1] * self.ndim))
        v = torch.from_numpy(self.control_velocity_mm).float()[None]
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        v_vox = F.interpolate(v, size=tuple(shape), mode=mode, align_corners=True) / sp
        s = integrate_svf(v_vox, SQUARING_STEPS)
        x = identity_grid(tuple(shape), dtype=torch.float32)
        c = torch.tensor([(n - 1) * h / 2 for n, h in zip(shape, spacing)], dtype=torch.float32)
        m = torch.from_numpy(self.affine[:, : self.ndim]).float()
        t = torch.from_numpy(self.affine[:, self.ndim]).float()
        y_mm = ((x + s) * sp).reshape(self.ndim, -1) - c[:, None]  # exp(v)(x) in mm, centred
        out_mm = torch.addmm((c + t)[:, None], m, y_mm)
        return out_mm.reshape(1, self.ndim, *shape) / sp - x


def sample_field(field: torch.Tensor, points_vox: torch.Tensor) -> torch.Tensor:
    """Linearly interpolate ``field`` ``(1, ndim, *S)`` at ``(N, ndim)`` voxel points -> ``(N, ndim)``.

    scipy ``map_coordinates`` (order 1); points outside the grid take the nearest border value.
    Meant for a few points (landmarks); dense fields use :func:`relative_displacement`.
    """
    f = field[0].detach().cpu().numpy() if isinstance(field, torch.Tensor) else field[0]
    pts = points_vox.detach().cpu().double().numpy().T
    from scipy.ndimage import map_coordinates  # imported on use (sample data only), as gaussian_filter below

    out = np.stack([map_coordinates(c, pts, order=1, mode="nearest") for c in f], axis=1)
    return torch.from_numpy(out.astype(np.float64))


def invert_points(
    forward: torch.Tensor, targets_vox: torch.Tensor, iterations: int = 30
) -> tuple[torch.Tensor, float]:
    """Solve ``x + w(x) = y`` for each target y by fixed-point iteration ``x <- y - w(x)``.

    Args:
        forward: ``w`` ``(1, ndim, *S)`` voxels (converges when |grad w| < 1, true for these fields).
        targets_vox: ``(N, ndim)`` voxel points y.
    Returns:
        ``(N, ndim)`` float64 points x (voxels) and the max residual ``|x + w(x) - y|`` in voxels.
    """
    y = targets_vox.double()
    forward = forward.detach().cpu().double().numpy()
    x = y - sample_field(forward, y)
    for _ in range(iterations):
        x = y - sample_field(forward, x)
    residual = (x + sample_field(forward, x) - y).norm(dim=-1).max().item() if len(y) else 0.0
    return x, residual


def relative_displacement(
    forward_fixed: torch.Tensor, forward_moving: torch.Tensor, iterations: int = 12
) -> tuple[torch.Tensor, float]:
    """Ground truth ``u`` with ``phi = psi_moving^-1 o psi_fixed``, ``phi(x) = x + u(x)``.

    Both fields ``(1, ndim, *S)`` voxels on the same grid. Then ``moving(phi(x)) =
    template(psi_fixed(x)) = fixed(x)``: phi maps fixed voxels to moving voxels (regcore's
    direction). Solves ``u + w_m(x + u) = w_f(x)`` by the fixed point ``u <- w_f - w_m o (id + u)``.
    Returns ``(1, ndim, *S)`` float32 voxels and the max residual in voxels.
    """
    if forward_fixed.shape != forward_moving.shape:
        raise ValueError(
            f"fields must share a shape, got {tuple(forward_fixed.shape)} and {tuple(forward_moving.shape)}"
        )
    w_f, w_m = forward_fixed.float(), forward_moving.float()
    u = w_f - w_m
    for _ in range(iterations):
        new = w_f - warp(w_m, u, mode="bilinear", padding_mode="border")
        change = (new - u).abs().max().item()
        u = new
        if change < 1e-4:
            break
    residual = max_vector_length(u + warp(w_m, u, mode="bilinear", padding_mode="border") - w_f).item()
    return u, residual


def random_transform(
    ndim: int,
    fov_mm: tuple[float, ...],
    rng: np.random.Generator,
    *,
    max_displacement_mm: float = 5.0,
    smoothness_mm: float = 16.0,
    control_spacing_mm: float = 8.0,
    max_rotation_deg: float = 3.0,
    max_translation_mm: float = 3.0,
    max_scaling: float = 0.03,
) -> SubjectTransform:
    """Draw a random ``SubjectTransform``.

    Args:
        fov_mm: field of view per tensor axis ((n-1) * spacing).
        max_displacement_mm: largest velocity magnitude of the deformable part (mm).
        smoothness_mm: Gaussian smoothing of the control-grid noise (mm).
        control_spacing_mm: approximate spacing of the control grid (mm).
        max_rotation_deg, max_translation_mm, max_scaling: bounds of the uniform affine draw.
    """
    if ndim not in (2, 3) or len(fov_mm) != ndim:
        raise ValueError(f"ndim must be 2 or 3 with {ndim} fov_mm entries, got ndim={ndim}, fov_mm={fov_mm}")
    if max_displacement_mm < 0:
        raise ValueError(f"max_displacement_mm must be >= 0, got {max_displacement_mm}")
    ctrl = tuple(max(int(round(f / control_spacing_mm)) + 1, 4) for f in fov_mm)
    noise = rng.standard_normal((ndim, *ctrl))
    sigma = [smoothness_mm / (f / (c - 1)) for f, c in zip(fov_mm, ctrl)]
    from scipy.ndimage import gaussian_filter

    v = np.stack([gaussian_filter(n, sigma, mode="nearest") for n in noise])
    peak = np.linalg.norm(v, axis=0).max()
    v *= max_displacement_mm * rng.uniform(0.6, 1.0) / max(peak, 1e-12)
    return SubjectTransform(v, random_affine(ndim, rng, max_rotation_deg, max_translation_mm, max_scaling))


def random_affine(
    ndim: int,
    rng: np.random.Generator,
    max_rotation_deg: float,
    max_translation_mm: float,
    max_scaling: float,
) -> np.ndarray:
    """``(ndim, ndim+1)`` [R S | t] in mm: uniform rotation(s), per-axis scaling and translation."""
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 1 if ndim == 2 else 3))
    rot = np.eye(ndim)
    planes = [(0, 1)] if ndim == 2 else [(0, 1), (0, 2), (1, 2)]
    for (a, b), th in zip(planes, angles):
        r = np.eye(ndim)
        r[a, a] = r[b, b] = np.cos(th)
        r[a, b], r[b, a] = -np.sin(th), np.sin(th)
        rot = rot @ r
    scale = np.diag(1.0 + rng.uniform(-max_scaling, max_scaling, ndim))
    t = rng.uniform(-max_translation_mm, max_translation_mm, ndim)
    return np.concatenate([rot @ scale, t[:, None]], axis=1)
