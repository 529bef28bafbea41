"""Compiled CPU backend (numba) of the per-voxel maps of :mod:`regcore.metrics.deformation`, 3D only.

One parallel pass over a ``(3, Z, Y, X)`` voxel displacement (fixed -> moving, component i along tensor
axis i) writes, per voxel, both

* ``det``: ``det(I + du/dx)`` with central differences, one-sided at the border (``torch.gradient``,
  as :func:`regcore.spatial.jacobian.jacobian_determinant`), and
* ``ndv``: Liu et al.'s non-diffeomorphic volume (the 8 corner and 2 central tetrahedra of
  :func:`regcore.metrics.deformation._simplex_determinants`, edge-replicated field),

with no temporaries: about 60 flops per voxel and two float32 output maps, against ~30 full-size
temporaries for the torch version. :func:`map_summary` then reduces both maps to the numbers
``deformation_metrics`` reports in two parallel passes, without the float64 and boolean copies of the
torch reductions. Sums are taken in float64, so values differ from the float32
torch path by float32 rounding only (~1e-7 relative). :data:`AVAILABLE` follows
:data:`regcore.spatial.warp_kernels.AVAILABLE`; callers use the torch path when it is False.
"""

from __future__ import annotations

import numpy as np

from regcore.spatial import warp_kernels

AVAILABLE = warp_kernels.AVAILABLE

if AVAILABLE:
    import numba

    _OPTIONS = {k: v for k, v in warp_kernels.NUMBA_OPTIONS.items() if k != "fastmath"}  # keep IEEE order
    _jit = numba.njit(**_OPTIONS)
    _pjit = numba.njit(parallel=True, **_OPTIONS)

    @_jit
    def _det3(a00, a01, a02, a10, a11, a12, a20, a21, a22):
        """Determinant of ``[[a00, a01, a02], ...]`` in the expansion of ``regcore.spatial.jacobian.small_det``."""
        return a00 * (a11 * a22 - a12 * a21) - a01 * (a10 * a22 - a12 * a20) + a02 * (a10 * a21 - a11 * a20)

    @_jit
    def _edge(u, out, k, z, y, x, oz, oy, ox):
        """``out[k, c] = phi(x + o) - phi(x)`` component c, ``= o_c + u_c(clamp(x + o)) - u_c(x)``."""
        nz, ny, nx = u.shape[1], u.shape[2], u.shape[3]
        zz, yy, xx = min(max(z + oz, 0), nz - 1), min(max(y + oy, 0), ny - 1), min(max(x + ox, 0), nx - 1)
        out[k, 0] = oz + (np.float64(u[0, zz, yy, xx]) - np.float64(u[0, z, y, x]))
        out[k, 1] = oy + (np.float64(u[1, zz, yy, xx]) - np.float64(u[1, z, y, x]))
        out[k, 2] = ox + (np.float64(u[2, zz, yy, xx]) - np.float64(u[2, z, y, x]))

    @_jit
    def _det_columns(e, i, j, k):
        """det of the matrix whose columns are the edge vectors ``e[i], e[j], e[k]`` (rows = components)."""
        return _det3(e[i, 0], e[j, 0], e[k, 0], e[i, 1], e[j, 1], e[k, 1], e[i, 2], e[j, 2], e[k, 2])

    @_jit
    def _steps(i, n):
        """Grid steps spanned by the central difference at index i of n (2 inside, 1 at either end)."""
        return (1.0 if i < n - 1 else 0.0) + (1.0 if i > 0 else 0.0)

    @_jit
    def _gradient_column(e, g, a, steps):
        """Column a of ``J = I + du/dx`` from the forward (``e[a]``) and backward (``e[3 + a]``) edges."""
        for r in range(3):
            eye = 1.0 if r == a else 0.0
            g[r, a] = ((e[a, r] - eye) + (e[3 + a, r] - eye)) / steps + eye

    @_pjit
    def _jacobian_and_ndv_3d(u, det, ndv):
        nz, ny, nx = u.shape[1], u.shape[2], u.shape[3]
        for z in numba.prange(nz):
            # edges: 0-2 phi(x + e_a) - phi(x); 3-5 phi(x) - phi(x - e_a); 6-11 the central tetrahedra's
            e = np.empty((12, 3), dtype=np.float64)
            g = np.empty((3, 3), dtype=np.float64)  # J = I + du/dx, g[r, a] = d phi_r / d x_a
            for y in range(ny):
                for x in range(nx):
                    _edge(u, e, 0, z, y, x, 1, 0, 0)
                    _edge(u, e, 1, z, y, x, 0, 1, 0)
                    _edge(u, e, 2, z, y, x, 0, 0, 1)
                    _edge(u, e, 3, z, y, x, -1, 0, 0)
                    _edge(u, e, 4, z, y, x, 0, -1, 0)
                    _edge(u, e, 5, z, y, x, 0, 0, -1)
                    for a in range(3):  # backward edge = -(phi(x - e_a) - phi(x))
                        for c in range(3):
                            e[3 + a, c] = -e[3 + a, c]
                    _edge(u, e, 6, z, y, x, -1, -1, 0)
                    _edge(u, e, 7, z, y, x, -1, 0, -1)
                    _edge(u, e, 8, z, y, x, 0, -1, -1)
                    _edge(u, e, 9, z, y, x, 1, 1, 0)
                    _edge(u, e, 10, z, y, x, 0, 1, 1)
                    _edge(u, e, 11, z, y, x, 1, 0, 1)
                    # det J, central differences (one-sided at the border, like torch.gradient):
                    # du_r/dx_a = (u_r(clamp(i + 1)) - u_r(clamp(i - 1))) / (number of real steps)
                    _gradient_column(e, g, 0, _steps(z, nz))
                    _gradient_column(e, g, 1, _steps(y, ny))
                    _gradient_column(e, g, 2, _steps(x, nx))
                    det[z, y, x] = _det3(
                        g[0, 0], g[0, 1], g[0, 2], g[1, 0], g[1, 1], g[1, 2], g[2, 0], g[2, 1], g[2, 2]
                    )
                    neg = 0.0
                    for i in (0, 3):  # the 8 corner tetrahedra: forward or backward edge along each axis
                        for j in (1, 4):
                            for k in (2, 5):
                                neg += min(_det_columns(e, i, j, k), 0.0)
                    neg += min(_det_columns(e, 6, 7, 8), 0.0)
                    neg += min(_det_columns(e, 9, 10, 11), 0.0)
                    ndv[z, y, x] = -0.5 * neg / 6.0

    @_pjit
    def _plane_sums(det, ndv, lo, hi, sums, low, high):
        for z in numba.prange(det.shape[0]):
            folded = positive = 0
            log_sum = ndv_sum = 0.0
            dmin, dmax = np.inf, -np.inf
            for y in range(det.shape[1]):
                for x in range(det.shape[2]):
                    d = det[z, y, x]
                    ndv_sum += ndv[z, y, x]
                    if d <= 0.0:
                        folded += 1
                    elif d > 0.0:  # NaN is neither folded nor counted in the log statistics
                        positive += 1
                        log_sum += np.log(min(max(np.float64(d), lo), hi))
                    dmin, dmax = min(dmin, d), max(dmax, d)
            sums[z, 0], sums[z, 1], sums[z, 2], sums[z, 3] = folded, positive, log_sum, ndv_sum
            low[z], high[z] = dmin, dmax

    @_pjit
    def _plane_log_deviations(det, lo, hi, mean, out):
        for z in numba.prange(det.shape[0]):
            acc = 0.0
            for y in range(det.shape[1]):
                for x in range(det.shape[2]):
                    d = det[z, y, x]
                    if d > 0.0:
                        e = np.log(min(max(np.float64(d), lo), hi)) - mean
                        acc += e * e
            out[z] = acc


def map_summary(det: np.ndarray, ndv: np.ndarray, clip: tuple[float, float]) -> dict:
    """The summary of ``(Z, Y, X)`` float32 ``det`` and ``ndv`` maps that ``deformation_metrics`` reports.

    ``folded``: voxels with det <= 0; ``positive``: with det > 0; ``log_mean`` and ``log_std`` (population,
    two passes) of ``log(clip(det))`` over the positive ones (NaN when none); ``ndv_sum``; ``det_min`` and
    ``det_max``. Sums in float64.
    """
    if det.shape != ndv.shape or det.ndim != 3 or det.dtype != np.float32 or ndv.dtype != np.float32:
        raise ValueError(
            f"det and ndv must be float32 (Z, Y, X) maps of one shape, got {det.shape}, {ndv.shape}"
        )
    lo, hi = float(clip[0]), float(clip[1])
    planes = det.shape[0]
    sums = np.zeros((planes, 4), np.float64)
    low, high = np.empty(planes, np.float32), np.empty(planes, np.float32)
    with warp_kernels.KERNEL_LOCK:
        _plane_sums(det, ndv, lo, hi, sums, low, high)
        folded, positive, log_sum, ndv_sum = sums.sum(axis=0)
        mean = log_sum / positive if positive else float("nan")
        deviations = np.zeros(planes, np.float64)
        if positive:
            _plane_log_deviations(det, lo, hi, mean, deviations)
    return {
        "folded": int(folded),
        "positive": int(positive),
        "log_mean": float(mean),
        "log_std": float(np.sqrt(deviations.sum() / positive)) if positive else float("nan"),
        "ndv_sum": float(ndv_sum),
        "det_min": float(low.min()) if planes else float("nan"),
        "det_max": float(high.max()) if planes else float("nan"),
    }


def jacobian_and_ndv_3d(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(det, ndv)`` float32 ``(Z, Y, X)`` maps of a float32 voxel displacement ``u`` ``(3, Z, Y, X)``."""
    u = np.ascontiguousarray(u, dtype=np.float32)
    if u.ndim != 4 or u.shape[0] != 3 or min(u.shape[1:]) < 2:
        raise ValueError(f"u must be (3, Z, Y, X) with every size >= 2, got {u.shape}")
    det = np.empty(u.shape[1:], dtype=np.float32)
    ndv = np.empty(u.shape[1:], dtype=np.float32)
    with warp_kernels.KERNEL_LOCK:
        _jacobian_and_ndv_3d(u, det, ndv)
    return det, ndv
