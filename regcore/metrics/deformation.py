"""Plausibility of a displacement: folding, SDlogJ, non-diffeomorphic volume, inverse consistency.

``u`` is ``(B, ndim, *S)`` (or ``(ndim, *S)``) in voxels of the fixed grid, ``phi(x) = x + u(x)``
maps fixed -> moving. Jacobian determinants are of ``phi`` and are unitless (voxel spacing
cancels for an isotropic or anisotropic grid because u is in voxels).

* folding_percent: % of voxels with det J <= 0 (central differences; ``regcore.spatial.jacobian``).
* sdlogj: std of log det J over voxels with det J > 0 (det clipped to [1e-9, 1e9]).
* ndv_percent: non-diffeomorphic volume of Liu et al., "On finite difference Jacobian computation
  in deformable image registration", IJCV 2024 (github.com/yihao6/digital_diffeomorphism): the
  signed volumes of the 10 tetrahedra (3D; 4 triangles in 2D) built from forward/backward
  differences; NDV = sum of their negative parts, as % of the grid volume. Unlike the
  central-difference det J it also catches foldings that central differences miss (checkerboards).
* inverse_consistency_error: |phi_bwd(phi_fwd(x)) - x| in mm.

Memory: the per-voxel maps are computed in slabs along the first spatial axis (one voxel of halo on
each side, cropped away), so a 3D field needs ~2 float32 maps of the grid beyond itself instead of
the ~30 full-size temporaries of finite differences done at once; the values are bit-identical.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from regcore.losses.regularizers import inverse_consistency_residual
from regcore.spatial.checks import check_field
from regcore.spatial.jacobian import jacobian_determinant, small_det
from regcore.spatial.lengths import vector_lengths


def _as_field(u, arg: str = "displacement") -> torch.Tensor:
    if isinstance(u, np.ndarray):
        u = torch.from_numpy(u)
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor or numpy array, got {type(u).__name__}")
    if u.ndim in (3, 4) and u.shape[0] == u.ndim - 1:
        u = u[None]
    u = u.detach()
    if not u.is_floating_point():
        u = u.double()
    check_field(u, arg, min_size=2)
    return u


def _masked(values: torch.Tensor, mask) -> torch.Tensor:
    """Flatten ``(B, *S)`` values, keeping voxels where mask (``(*S)`` or ``(B, *S)``-broadcastable) is true."""
    if mask is None:
        return values.flatten()
    m = torch.as_tensor(
        np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask, device=values.device
    )
    while m.ndim > values.ndim:
        m = m[0]
    try:
        return values[m.bool().expand_as(values)]
    except RuntimeError:
        raise ValueError(
            f"mask shape {tuple(m.shape)} does not match the grid {tuple(values.shape[1:])}"
        ) from None


SLAB_VOXELS = 2_000_000
"""Voxels per slab of the slab-wise finite differences (about 8 MB per float32 map)."""


def _slabwise(fn, field: torch.Tensor) -> torch.Tensor:
    """``fn(field)`` ``(B, *S)`` computed slab by slab along the first spatial axis.

    ``fn`` maps a field ``(B, n, s, *S[1:])`` to a map ``(B, s, *S[1:])`` using at most one neighbour
    along that axis and treating the slab's ends like the grid's (one-sided or replicated); each slab
    gets one halo plane on each side that lies inside the grid, so the kept values equal ``fn(field)``.
    """
    size = field.shape[2]
    planes = max(1, SLAB_VOXELS // max(1, math.prod(field.shape[3:])))
    if planes + 2 >= size:
        return fn(field)
    out = None
    for start in range(0, size, planes):
        stop = min(start + planes, size)
        lo, hi = max(start - 1, 0), min(stop + 1, size)
        part = fn(field[:, :, lo:hi])[:, start - lo : start - lo + (stop - start)]
        if out is None:
            out = part.new_empty((field.shape[0], *field.shape[2:]))
        out[:, start:stop] = part
    assert out is not None  # size >= 1
    return out


@torch.no_grad()
def jacobian_determinant_map(u) -> torch.Tensor:
    """``det J_phi`` ``(B, *S)`` of ``u`` ``(B, ndim, *S)`` or ``(ndim, *S)`` (tensor or array, voxels):
    :func:`regcore.spatial.jacobian.jacobian_determinant` without autograd, slab by slab."""
    return _slabwise(jacobian_determinant, _as_field(u))


def _folding(det: torch.Tensor) -> float:
    return float(int((det <= 0).sum()) / det.numel() * 100.0) if det.numel() else float("nan")


SDLOGJ_CLIP = (1e-9, 1e9)
"""det J is clipped to this range before its log (SDlogJ)."""


def _sdlogj(det: torch.Tensor, clip: tuple[float, float] = SDLOGJ_CLIP) -> float:
    det = det[det > 0].double()  # one float64 copy of the positive values; clamp and log in place
    return float(det.clamp_(*clip).log_().std(unbiased=False)) if det.numel() else float("nan")


@torch.no_grad()
def folding_percent(u, mask=None) -> float:
    """Percentage of voxels (inside ``mask``) with det J <= 0."""
    return _folding(_masked(jacobian_determinant_map(u), mask))


@torch.no_grad()
def sdlogj(u, mask=None, clip: tuple[float, float] = SDLOGJ_CLIP) -> float:
    """Standard deviation of ``log(clip(det J))`` over voxels (inside ``mask``) with det J > 0; NaN if none."""
    return _sdlogj(_masked(jacobian_determinant_map(u), mask), clip)


def _simplex_determinants(u: torch.Tensor) -> list[torch.Tensor]:
    """Liu et al.'s finite-difference Jacobian determinants of ``phi``: 10 (3D) or 4 (2D) maps ``(B, *S)``.

    The field is edge-padded by one voxel (as in Liu's reference code); forward differences are
    computed once on the padded grid and backward differences are shifted views of them.
    """
    n = u.ndim - 2
    shape = u.shape[2:]
    pad = torch.nn.functional.pad(u, [1, 1] * n, mode="replicate")
    full = lambda: [slice(None), slice(None)] + [slice(1, 1 + s) for s in shape]  # noqa: E731

    def view(t, axis, start):  # t sliced to the original grid, shifted by ``start - 1`` along ``axis``
        idx = full()
        idx[2 + axis] = slice(start, start + shape[axis])
        return t[tuple(idx)]

    # forward difference of phi = id + u along axis a on the padded grid: e_a + du (size S+2, last slab unused)
    fwd = []
    for a in range(n):
        d = torch.zeros_like(pad)
        idx_hi = [slice(None)] * pad.ndim
        idx_lo = [slice(None)] * pad.ndim
        idx_hi[2 + a], idx_lo[2 + a] = slice(1, None), slice(None, -1)
        d[tuple(idx_lo)] = pad[tuple(idx_hi)] - pad[tuple(idx_lo)]
        d[:, a] += 1.0
        fwd.append(d)
    plus = [view(fwd[a], a, 1) for a in range(n)]  # phi(x + e_a) - phi(x)
    minus = [view(fwd[a], a, 0) for a in range(n)]  # phi(x) - phi(x - e_a)

    def det(columns):  # columns: (B, n, *S) edge vectors -> det of the matrix [component, column]
        return small_det([[col[:, r] for col in columns] for r in range(n)])

    dets = [
        det([plus[a] if s > 0 else minus[a] for a, s in enumerate(signs)])
        for signs in itertools.product((1, -1), repeat=n)
    ]
    if n == 3:  # the two central tetrahedra of the cube decompositions (Liu's j1*, j2*)
        centre = pad[tuple(full())]

        def at(offset):  # phi(x + offset) - phi(x) = offset + u(x + offset) - u(x)
            idx = [slice(None), slice(None)] + [slice(1 + o, 1 + o + s) for o, s in zip(offset, shape)]
            step = torch.tensor(offset, dtype=u.dtype, device=u.device).view(1, 3, 1, 1, 1)
            return pad[tuple(idx)] - centre + step

        dets.append(det([at((-1, -1, 0)), at((-1, 0, -1)), at((0, -1, -1))]))
        dets.append(det([at((1, 1, 0)), at((0, 1, 1)), at((1, 0, 1))]))
    return dets


def _ndv_map(field: torch.Tensor) -> torch.Tensor:
    weight = 1.0 / 6.0 if field.shape[1] == 3 else 1.0 / 2.0  # simplex volume = |det| / n!
    return torch.stack([-0.5 * torch.clamp(d, max=0) * weight for d in _simplex_determinants(field)]).sum(0)


@torch.no_grad()
def non_diffeomorphic_volume(u) -> torch.Tensor:
    """Per-voxel non-diffeomorphic volume (voxel units) ``(B, *S)`` after Liu et al. 2024 (slab by slab)."""
    return _slabwise(_ndv_map, _as_field(u))


@torch.no_grad()
def ndv_percent(u, mask=None) -> float:
    """Non-diffeomorphic volume as % of the (masked) grid volume; 0 for a digitally diffeomorphic map."""
    ndv = _masked(non_diffeomorphic_volume(u), mask)
    return float(ndv.double().sum() / max(ndv.numel(), 1) * 100.0)


@torch.no_grad()
def inverse_consistency_error(u_fwd, u_bwd, spacing=1.0, mask=None) -> dict:
    """``|phi_bwd(phi_fwd(x)) - x|`` in mm: ``{"mean_mm", "std_mm", "p95_mm", "max_mm"}``.

    spacing: voxel size in mm per tensor axis (scalar = isotropic); the grid's direction matrix
    is a rotation and does not change lengths.
    """
    fwd, bwd = _as_field(u_fwd, "u_fwd"), _as_field(u_bwd, "u_bwd")
    n = fwd.shape[1]
    sp = np.full(n, float(spacing)) if np.isscalar(spacing) else np.asarray(spacing, dtype=float)
    if sp.shape != (n,) or np.any(sp <= 0):
        raise ValueError(f"spacing must be {n} positive mm values, got {spacing!r}")
    res = inverse_consistency_residual(fwd, bwd.to(fwd.dtype))
    scale = torch.as_tensor(sp, dtype=res.dtype, device=res.device).view(1, n, *([1] * n))
    err = _masked(vector_lengths(res * scale), mask).double().cpu().numpy()
    return {
        "mean_mm": float(err.mean()),
        "std_mm": float(err.std()),
        "p95_mm": float(np.percentile(err, 95)),
        "max_mm": float(err.max()),
    }


def _maps(field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(det J, NDV)`` per voxel, ``(B, *S)`` each: one fused compiled pass for a float32 3D field on the
    CPU (:mod:`regcore.metrics.deformation_kernels`), the slab-wise torch maps otherwise."""
    from regcore.metrics import deformation_kernels as kernels

    if (
        kernels.AVAILABLE
        and field.shape[1] == 3
        and field.dtype == torch.float32
        and field.device.type == "cpu"
    ):
        pairs = [kernels.jacobian_and_ndv_3d(f.numpy()) for f in field]
        return (
            torch.from_numpy(np.stack([p[0] for p in pairs])),
            torch.from_numpy(np.stack([p[1] for p in pairs])),
        )
    return jacobian_determinant_map(field), non_diffeomorphic_volume(field)


@torch.no_grad()
def deformation_metrics(u, mask=None) -> dict:
    """``{"folding_percent", "sdlogj", "ndv_percent", "jacobian_min", "jacobian_max"}`` for one field.

    The field is checked once and each per-voxel map (det J, NDV) is computed once: in one compiled
    pass for a float32 3D field on the CPU (equal to the torch maps up to float32 rounding), slab by
    slab with torch otherwise; without a mask, a compiled pass reduces them (float64 sums).
    """
    field = _as_field(u)
    det, ndv = _maps(field)
    if (
        mask is None
        and det.dtype == torch.float32
        and det.device.type == "cpu"
        and det.shape[0] == 1
        and det.ndim == 4
    ):
        from regcore.metrics import deformation_kernels as kernels

        if kernels.AVAILABLE:  # one compiled reduction over both maps, no float64 or boolean copies
            summary = kernels.map_summary(det[0].numpy(), ndv[0].numpy(), SDLOGJ_CLIP)
            voxels = det.numel()
            return {
                "folding_percent": summary["folded"] / voxels * 100.0,
                "sdlogj": summary["log_std"],
                "ndv_percent": summary["ndv_sum"] / voxels * 100.0,
                "jacobian_min": summary["det_min"],
                "jacobian_max": summary["det_max"],
            }
    det, ndv = _masked(det, mask), _masked(ndv, mask)
    return {
        "folding_percent": _folding(det),
        "sdlogj": _sdlogj(det),
        "ndv_percent": float(ndv.double().sum() / max(ndv.numel(), 1) * 100.0),
        "jacobian_min": float(det.min()),
        "jacobian_max": float(det.max()),
    }
