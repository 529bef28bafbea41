"""Compiled CPU backend (numba) of :func:`regcore.spatial.smooth.gaussian_smooth`.

One separable pass per axis with replicate border: ``dst[i] = sum_k taps[k + r] * src[clamp(i + k)]``
for ``k = -r..r`` (accumulated in that order), on a C-contiguous ``(C, Z, Y, X)`` float32 array;
a 2D image is ``(C, 1, Y, X)`` with no Z pass. The Z and Y passes run in parallel along the
filtered axis, the X pass along Z. Taps come from
:func:`regcore.spatial.smooth.gaussian_kernel_1d` (float32). Forward only (no gradient).
:data:`AVAILABLE` follows :data:`regcore.spatial.warp_kernels.AVAILABLE`; callers use the torch
backend when it is False.
"""

from __future__ import annotations

import numpy as np

from regcore.spatial import warp_kernels

AVAILABLE = warp_kernels.AVAILABLE

if AVAILABLE:
    import numba

    _pjit = warp_kernels.parallel_jit

    @_pjit
    def _gauss_lines(src, dst, taps):
        """Filter along axis 1 of ``(A, N, B)`` arrays (a Z or Y pass on a reshaped view), parallel
        over that axis; the inner loop runs along the contiguous B axis."""
        outer, n, inner = src.shape
        r = len(taps) // 2
        for i in numba.prange(n):
            for a in range(outer):
                for b in range(inner):
                    dst[a, i, b] = 0.0
                for k in range(-r, r + 1):
                    ii = min(max(i + k, 0), n - 1)
                    w = taps[k + r]
                    for b in range(inner):
                        dst[a, i, b] += w * src[a, ii, b]

    @_pjit
    def _gauss_x(src, dst, taps):
        channels, nz, ny, nx = src.shape
        r = len(taps) // 2
        for z in numba.prange(nz):
            for c in range(channels):
                for y in range(ny):
                    for x in range(nx):
                        s = 0.0
                        for k in range(-r, r + 1):
                            s += taps[k + r] * src[c, z, y, min(max(x + k, 0), nx - 1)]
                        dst[c, z, y, x] = s

    def _gauss_z(src, dst, taps):
        c, nz, ny, nx = src.shape
        _gauss_lines(src.reshape(c, nz, ny * nx), dst.reshape(c, nz, ny * nx), taps)

    def _gauss_y(src, dst, taps):
        c, nz, ny, nx = src.shape
        _gauss_lines(src.reshape(c * nz, ny, nx), dst.reshape(c * nz, ny, nx), taps)

    _PASSES = (_gauss_z, _gauss_y, _gauss_x)


def separable_gaussian(
    array: np.ndarray, spare: np.ndarray, taps: tuple[np.ndarray | None, ...], threads: int
) -> np.ndarray:
    """Filter ``array`` ``(C, Z, Y, X)`` float32 along Z, Y, X with ``taps[axis]`` (odd float32 arrays;
    None skips that axis), ping-ponging with ``spare`` (same shape). Returns whichever of the two
    holds the result; ``array`` is overwritten. Raises RuntimeError when numba is unavailable."""
    if not AVAILABLE:
        raise RuntimeError("numba is not available; use the torch backend of gaussian_smooth")
    if array.ndim != 4 or spare.shape != array.shape or len(taps) != 3:
        raise ValueError(
            f"need (C, Z, Y, X) array and spare of one shape and 3 tap arrays, got {array.shape}, "
            f"{spare.shape}, {len(taps)}"
        )
    src, dst = array, spare
    with warp_kernels.KERNEL_LOCK:
        warp_kernels.set_threads(threads)
        for kernel, axis_taps in zip(_PASSES, taps):
            if axis_taps is None:
                continue
            kernel(src, dst, axis_taps)
            src, dst = dst, src
    return src
