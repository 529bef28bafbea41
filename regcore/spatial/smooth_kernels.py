"""Compiled CPU backend (numba) of :func:`regcore.spatial.smooth.gaussian_smooth`.

One separable pass per axis with replicate border: ``dst[i] = sum_k taps[k + r] * src[clamp(i + k)]``
(the centre tap first, then the pair ``+-k`` for ``k = 1..r`` in one sweep: half the passes over ``dst`` of a
loop over single taps), on a C-contiguous ``(C, Z, Y, X)`` float32 array; a 2D image is ``(C, 1, Y, X)`` with
no Z pass. The Z and Y passes run in parallel along the filtered axis, the X pass along Z. Taps come from
:func:`regcore.spatial.smooth.gaussian_kernel_1d` (float32). Forward only (no gradient). :data:`AVAILABLE`
follows :data:`regcore.spatial.warp_kernels.AVAILABLE`; callers use the torch backend when it is False.
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
        over that axis; the inner loops run along the contiguous B axis."""
        outer, n, inner = src.shape
        r = len(taps) // 2
        for i in numba.prange(n):
            for a in range(outer):
                centre = taps[r]
                for b in range(inner):
                    dst[a, i, b] = centre * src[a, i, b]
                for k in range(1, r + 1):
                    left, right = taps[r - k], taps[r + k]
                    below, above = max(i - k, 0), min(i + k, n - 1)
                    for b in range(inner):
                        dst[a, i, b] += left * src[a, below, b] + right * src[a, above, b]

    @_pjit
    def _gauss_x(src, dst, taps):
        """Filter along the contiguous X axis, parallel over Z; per row as :func:`_gauss_lines` per plane
        (the clamped border voxels apart), so the inner loops vectorise: a loop over the taps per voxel does
        not, and took ~2-3x as long on a 1 mm brain field."""
        channels, nz, ny, nx = src.shape
        r = len(taps) // 2
        for z in numba.prange(nz):
            for c in range(channels):
                for y in range(ny):
                    row, out = src[c, z, y], dst[c, z, y]
                    centre = taps[r]
                    for x in range(nx):
                        out[x] = centre * row[x]
                    for k in range(1, r + 1):
                        left, right = taps[r - k], taps[r + k]
                        for x in range(k, nx - k):
                            out[x] += left * row[x - k] + right * row[x + k]
                        for x in range(min(k, nx)):  # the left border, and a row shorter than 2k
                            out[x] += left * row[max(x - k, 0)] + right * row[min(x + k, nx - 1)]
                        for x in range(max(k, nx - k), nx):
                            out[x] += left * row[x - k] + right * row[nx - 1]

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
