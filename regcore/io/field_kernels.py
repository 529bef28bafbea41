"""Compiled CPU backend (numba) of :func:`regcore.io.transforms.save_displacement`'s conversion, 3D only.

One parallel pass turns a voxel displacement ``u`` ``(3, I, J, K)`` (tensor axis order) into LPS mm
vectors, ``d_mm[c, k, j, i] = sum_m a[c, m] u[m, i, j, k]`` with ``a = direction @ diag(spacing)``: the same
float64 sums (zero entries of ``a`` skipped, in the same order) cast to float32 as the numpy path, without
its three 56 MB float64 temporaries per component. The result is planar, ``(3, K, J, I)``: a vector NIfTI
stores the component as its slowest axis, so that array's bytes are the file's voxel data as they are.
:data:`AVAILABLE` follows :data:`regcore.spatial.warp_kernels.AVAILABLE`.
"""

from __future__ import annotations

import numpy as np

from regcore.spatial import warp_kernels

AVAILABLE = warp_kernels.AVAILABLE

if AVAILABLE:
    import numba

    _pjit = numba.njit(
        parallel=True, **{k: v for k, v in warp_kernels.NUMBA_OPTIONS.items() if k != "fastmath"}
    )

    _TILE = 32  # (i, k) tiles: reads along k and writes along i both stay within a few cache lines

    @_pjit
    def _lps_vectors_3d(u, a, out):
        ni, nj, nk = u.shape[1], u.shape[2], u.shape[3]
        for j in numba.prange(nj):
            for i0 in range(0, ni, _TILE):
                for k0 in range(0, nk, _TILE):
                    for k in range(k0, min(k0 + _TILE, nk)):
                        for i in range(i0, min(i0 + _TILE, ni)):
                            for c in range(3):
                                acc = 0.0
                                for m in range(3):
                                    if a[c, m] != 0.0:
                                        acc += a[c, m] * np.float64(u[m, i, j, k])
                                out[c, k, j, i] = acc


def lps_vectors_3d(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(3, K, J, I)`` float32 LPS mm vectors (component planes) of a float32 voxel displacement
    ``(3, I, J, K)``; ``a`` ``(3, 3)``."""
    out = np.empty((3, *u.shape[:0:-1]), dtype=np.float32)
    with warp_kernels.KERNEL_LOCK:
        _lps_vectors_3d(np.ascontiguousarray(u, np.float32), np.ascontiguousarray(a, np.float64), out)
    return out
