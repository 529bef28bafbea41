"""Box sums along one axis of ``(C, Z, Y, X)`` float32 arrays (numba), the building blocks of the box LNCC in
``greedy_kernels``.

A box sum of radius ``r`` adds the ``2 r + 1`` values around each voxel along the axis, zero padding (the window
is clipped at the border, as ``lncc.lncc_and_gradient``'s box filter). Each is a running sum: the window moves by
one voxel, one value enters and one leaves, so a voxel costs two additions whatever the window, in float64
accumulators (no drift along a 224-voxel row; the sums agree with direct float32 sums to ~1e-6). On a 1 mm brain
(160 x 192 x 224) with window 7 they cut the LNCC force from ~260 to ~150 ms on 2 cores, and sweeping whole z
planes (not z rows of one y) cut it by a further ~20 % (``benchmarks/fireants_iteration.py``). Every kernel runs in
parallel over an outer axis. ``tests/test_greedy_kernels.py`` checks them against scipy's direct sums.
"""

from __future__ import annotations

import numpy as np

from regcore.spatial import warp_kernels

AVAILABLE = warp_kernels.AVAILABLE

if AVAILABLE:
    import numba

    _pjit = warp_kernels.parallel_jit

    Z_CHUNKS = 4
    """Runs per channel of the z box sums (enough parallel jobs for the threads; fewer when z is short)."""

    @_pjit
    def box_x(src, dst, channels, r):
        """Box sums along x of ``src[:channels]`` into ``dst[:channels]`` (distinct arrays)."""
        nz, ny, nx = src.shape[1:]
        for z in numba.prange(nz):
            for c in range(channels):
                for y in range(ny):
                    s = 0.0
                    for k in range(min(r, nx - 1) + 1):
                        s += src[c, z, y, k]
                    dst[c, z, y, 0] = s
                    for x in range(1, nx):
                        if x + r < nx:
                            s += src[c, z, y, x + r]
                        if x > r:
                            s -= src[c, z, y, x - r - 1]
                        dst[c, z, y, x] = s

    @_pjit
    def box_x_of_lncc_terms(fixed, warped, dst, r):
        """Box sums along x of I, J, I^2, J^2, IJ: ``fixed``/``warped`` ``(Z, Y, X)`` -> ``dst (5, Z, Y, X)``."""
        nz, ny, nx = fixed.shape
        for z in numba.prange(nz):
            for y in range(ny):
                si = sj = sii = sjj = sij = 0.0
                for x in range(-r, nx):  # x < 0: the window is still filling
                    if x + r < nx:
                        i, j = fixed[z, y, x + r], warped[z, y, x + r]
                        si += i
                        sj += j
                        sii += i * i
                        sjj += j * j
                        sij += i * j
                    if x > r:
                        i, j = fixed[z, y, x - r - 1], warped[z, y, x - r - 1]
                        si -= i
                        sj -= j
                        sii -= i * i
                        sjj -= j * j
                        sij -= i * j
                    if x >= 0:
                        dst[0, z, y, x] = si
                        dst[1, z, y, x] = sj
                        dst[2, z, y, x] = sii
                        dst[3, z, y, x] = sjj
                        dst[4, z, y, x] = sij

    # box_y sweeps the rows of each z plane, box_z whole planes: one kernel choosing the axis at run time
    # measured 203 ms for the LNCC force at 1 mm against 149 ms with two (it compiles one loop for both layouts).
    @_pjit
    def box_y(src, dst, r):
        """Box sums along y of every channel of ``src`` into ``dst``; whole x rows, so they vectorise."""
        channels, nz, ny, nx = src.shape
        for z in numba.prange(nz):
            acc = np.empty(nx, np.float64)
            for c in range(channels):
                _running_rows(src[c, z], dst[c, z], acc, r)

    def box_z(src, dst, r):
        """Box sums along z of every channel of ``src (C, Z, Y, X)`` (C-contiguous) into ``dst``."""
        channels, nz = src.shape[:2]
        chunks = max(1, min(Z_CHUNKS, nz // (2 * r + 1)))
        _box_z_planes(src.reshape(channels, nz, -1), dst.reshape(channels, nz, -1), r, chunks)

    @_pjit
    def _box_z_planes(src, dst, r, chunks):
        """Running sums along axis 1 of ``(C, Z, N)`` arrays over whole planes (long contiguous sweeps: twice as
        fast as z rows of one y, which stride through memory). Z is cut into ``chunks`` runs per channel, each run
        in parallel with its own plane accumulator, restarted from a direct sum (float64: the same sums)."""
        channels, nz, n = src.shape
        for job in numba.prange(channels * chunks):
            c, part = job // chunks, job % chunks
            z0, z1 = nz * part // chunks, nz * (part + 1) // chunks
            acc = np.zeros(n, np.float64)
            for z in range(max(0, z0 - r), min(nz, z0 + r + 1)):
                for i in range(n):
                    acc[i] += src[c, z, i]
            for z in range(z0, z1):
                if z > z0 and z + r < nz:
                    for i in range(n):
                        acc[i] += src[c, z + r, i]
                if z > z0 and z > r:
                    for i in range(n):
                        acc[i] -= src[c, z - r - 1, i]
                for i in range(n):
                    dst[c, z, i] = acc[i]

    @warp_kernels.jit
    def _running_rows(src, dst, acc, r):
        """Running box sum over the rows of ``src (n, X)`` into ``dst``, ``acc (X,)`` float64 scratch."""
        n, nx = src.shape
        acc[:] = 0.0
        for k in range(min(r, n - 1) + 1):
            for x in range(nx):
                acc[x] += src[k, x]
        for row in range(n):
            if row > 0 and row + r < n:
                for x in range(nx):
                    acc[x] += src[row + r, x]
            if row > r:
                for x in range(nx):
                    acc[x] -= src[row - r - 1, x]
            for x in range(nx):
                dst[row, x] = acc[x]
