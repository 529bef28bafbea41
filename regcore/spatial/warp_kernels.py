"""Compiled CPU resampling kernels (numba) for :func:`regcore.spatial.warp.warp` without autograd.

torch's CPU ``grid_sample`` builds a normalised grid, runs a 3D kernel that is neither
vectorised nor parallel within one volume, and un-normalises every coordinate again. These
kernels read the voxel displacement directly: for every fixed-grid voxel x they sample
``moving`` at ``p = x + u(x)`` (voxels, component i along tensor axis i), parallel over
tensor axis 0 with numba's threads. Semantics match ``grid_sample(align_corners=True)``:

* linear: (bi/tri)linear; a corner outside the image contributes 0 under ``zeros``;
* nearest: round half to even, as grid_sample's ``nearbyint``;
* padding ``border`` clamps p to ``[0, n-1]``; ``reflection`` mirrors p about the first and
  last voxel centres, then clamps; ``zeros`` reads 0 outside.

Every index is bounds-checked, so NaN or infinite displacements read 0 instead of memory
outside the image. Shapes: ``image (C, *S)``, ``displacement (ndim, *S)``, ``out (C, *S)``,
all C-contiguous, same float dtype. The kernels are forward only (no gradient).

numba is optional at run time: :data:`AVAILABLE` is False when it cannot be imported (or
``REGCORE_WARP_BACKEND=torch`` is set) and callers then use the torch path.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import torch

PADDING_CODES = {"zeros": 0, "border": 1, "reflection": 2}

try:
    if os.environ.get("REGCORE_WARP_BACKEND", "auto").lower() == "torch":
        raise ImportError("REGCORE_WARP_BACKEND=torch")
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None
"""Whether the compiled kernels can be used in this process."""


class _KernelSection:
    """Context manager held around every compiled parallel kernel call.

    * A re-entrant lock: numba's fallback 'workqueue' threading layer must not be entered from two
      threads at once. Kernels are short (< 1 s at 7M voxels) and release the GIL, so concurrent
      callers simply take turns.
    * It restores torch's intra-op thread count on exit: with numba's 'omp' layer a parallel kernel
      sets the OpenMP thread count that torch shares (measured: torch.set_num_threads(1) became 2 after
      one smoothing call, and a 2D MI affine then took 6x the CPU time on a loaded 2-core machine).
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._saved = threading.local()

    def __enter__(self):
        self._lock.acquire()
        stack = self._saved.__dict__.setdefault("threads", [])
        stack.append(torch.get_num_threads())
        return self

    def __exit__(self, *exc):
        try:
            threads = self._saved.threads.pop()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        finally:
            self._lock.release()
        return False


KERNEL_LOCK = _KernelSection()
"""Held around every compiled parallel kernel call (see :class:`_KernelSection`)."""


if AVAILABLE:
    # Shared by every regcore kernel: cached on disk, GIL released, no bounds checks (kernels check
    # their own indices), fastmath without 'nnan'/'ninf' so that NaN/inf guards survive optimisation.
    NUMBA_OPTIONS = dict(
        cache=True,
        nogil=True,
        boundscheck=False,
        error_model="numpy",
        fastmath={"nsz", "arcp", "contract", "afn", "reassoc"},
    )
    jit = numba.njit(**NUMBA_OPTIONS)
    parallel_jit = numba.njit(parallel=True, **NUMBA_OPTIONS)
    _jit, _pjit = jit, parallel_jit

    @_jit
    def _coordinate(p, n, padding):
        """Apply the padding rule to one voxel coordinate ``p`` on an axis of ``n`` voxels."""
        if padding == 2 and n > 1:  # reflection about 0 and n - 1
            period = 2.0 * (n - 1)
            p = math.fabs(p) % period
            if p > n - 1:
                p = period - p
        if padding >= 1:  # border (and reflection, which grid_sample clamps too)
            p = min(max(p, 0.0), n - 1.0)
        return p

    @_jit
    def _linear_axis(p, n):
        """Lower index, upper index and upper weight for linear interpolation along one axis."""
        lo = math.floor(p)
        return int(lo) if math.isfinite(lo) else -1, p - lo

    @_pjit
    def _linear_3d(image, disp, out, padding, add_disp):
        """Trilinear sample of ``image`` at ``x + disp``; with ``add_disp`` (channels = 3) also add ``disp``."""
        c_count, nz, ny, nx = image.shape
        for z in numba.prange(nz):
            for y in range(ny):
                for x in range(nx):
                    pz = _coordinate(z + disp[0, z, y, x], nz, padding)
                    py = _coordinate(y + disp[1, z, y, x], ny, padding)
                    px = _coordinate(x + disp[2, z, y, x], nx, padding)
                    z0, wz = _linear_axis(pz, nz)
                    y0, wy = _linear_axis(py, ny)
                    x0, wx = _linear_axis(px, nx)
                    inner = 0 <= z0 < nz - 1 and 0 <= y0 < ny - 1 and 0 <= x0 < nx - 1
                    for c in range(c_count):
                        if inner:  # the common case: all 8 corners inside, no per-corner checks
                            im = image[c]
                            a = im[z0, y0, x0] + wx * (im[z0, y0, x0 + 1] - im[z0, y0, x0])
                            b = im[z0, y0 + 1, x0] + wx * (im[z0, y0 + 1, x0 + 1] - im[z0, y0 + 1, x0])
                            d = im[z0 + 1, y0, x0] + wx * (im[z0 + 1, y0, x0 + 1] - im[z0 + 1, y0, x0])
                            e = im[z0 + 1, y0 + 1, x0] + wx * (
                                im[z0 + 1, y0 + 1, x0 + 1] - im[z0 + 1, y0 + 1, x0]
                            )
                            ab = a + wy * (b - a)
                            value = ab + wz * ((d + wy * (e - d)) - ab)
                        else:
                            acc = 0.0
                            for dz in range(2):
                                iz = z0 + dz
                                if iz < 0 or iz >= nz:
                                    continue
                                fz = wz if dz else 1.0 - wz
                                for dy in range(2):
                                    iy = y0 + dy
                                    if iy < 0 or iy >= ny:
                                        continue
                                    fy = wy if dy else 1.0 - wy
                                    for dx in range(2):
                                        ix = x0 + dx
                                        if ix < 0 or ix >= nx:
                                            continue
                                        fx = wx if dx else 1.0 - wx
                                        acc += fz * fy * fx * image[c, iz, iy, ix]
                            value = acc
                        out[c, z, y, x] = value + disp[c, z, y, x] if add_disp else value

    @_pjit
    def _linear_2d(image, disp, out, padding, add_disp):
        """Bilinear sample of ``image`` at ``x + disp``; with ``add_disp`` (channels = 2) also add ``disp``."""
        c_count, ny, nx = image.shape
        for y in numba.prange(ny):
            for x in range(nx):
                py = _coordinate(y + disp[0, y, x], ny, padding)
                px = _coordinate(x + disp[1, y, x], nx, padding)
                y0, wy = _linear_axis(py, ny)
                x0, wx = _linear_axis(px, nx)
                inner = 0 <= y0 < ny - 1 and 0 <= x0 < nx - 1
                for c in range(c_count):
                    if inner:
                        im = image[c]
                        a = im[y0, x0] + wx * (im[y0, x0 + 1] - im[y0, x0])
                        b = im[y0 + 1, x0] + wx * (im[y0 + 1, x0 + 1] - im[y0 + 1, x0])
                        value = a + wy * (b - a)
                    else:
                        acc = 0.0
                        for dy in range(2):
                            iy = y0 + dy
                            if iy < 0 or iy >= ny:
                                continue
                            fy = wy if dy else 1.0 - wy
                            for dx in range(2):
                                ix = x0 + dx
                                if ix < 0 or ix >= nx:
                                    continue
                                acc += fy * (wx if dx else 1.0 - wx) * image[c, iy, ix]
                        value = acc
                    out[c, y, x] = value + disp[c, y, x] if add_disp else value

    @_jit
    def _nearest_index(p, n, padding):
        """Nearest voxel index (round half to even), or -1 when it falls outside."""
        r = np.rint(_coordinate(p, n, padding))
        if not math.isfinite(r) or r < 0 or r > n - 1:
            return -1
        return int(r)

    @_pjit
    def _nearest_3d(image, disp, out, padding):
        c_count, nz, ny, nx = image.shape
        for z in numba.prange(nz):
            for y in range(ny):
                for x in range(nx):
                    iz = _nearest_index(z + disp[0, z, y, x], nz, padding)
                    iy = _nearest_index(y + disp[1, z, y, x], ny, padding)
                    ix = _nearest_index(x + disp[2, z, y, x], nx, padding)
                    inside = iz >= 0 and iy >= 0 and ix >= 0
                    for c in range(c_count):
                        out[c, z, y, x] = image[c, iz, iy, ix] if inside else 0.0

    @_pjit
    def _nearest_2d(image, disp, out, padding):
        c_count, ny, nx = image.shape
        for y in numba.prange(ny):
            for x in range(nx):
                iy = _nearest_index(y + disp[0, y, x], ny, padding)
                ix = _nearest_index(x + disp[1, y, x], nx, padding)
                inside = iy >= 0 and ix >= 0
                for c in range(c_count):
                    out[c, y, x] = image[c, iy, ix] if inside else 0.0

    _KERNELS = {
        ("bilinear", 3): _linear_3d,
        ("bilinear", 2): _linear_2d,
        ("nearest", 3): _nearest_3d,
        ("nearest", 2): _nearest_2d,
    }


def resample(
    image: np.ndarray, displacement: np.ndarray, out: np.ndarray, mode: str, padding: str, threads: int
) -> bool:
    """Write ``image o (id + displacement)`` into ``out``; False (nothing written) if numba is unavailable.

    ``image``/``out`` ``(C, *S)`` and ``displacement`` ``(ndim, *S)``: C-contiguous (strided
    views work but are slow), one float dtype. ``threads``: numba threads to use.
    """
    if not AVAILABLE:
        return False
    kernel = _KERNELS[(mode, displacement.shape[0])]
    args = (image, displacement, out, PADDING_CODES[padding])
    with KERNEL_LOCK:
        set_threads(threads)
        kernel(*args, False) if mode == "bilinear" else kernel(*args)
    return True


def compose(outer: np.ndarray, inner: np.ndarray, out: np.ndarray, threads: int) -> bool:
    """``out = inner + outer o (id + inner)``: the displacement of ``(id + outer) o (id + inner)``.

    All three ``(ndim, *S)`` voxel fields, C-contiguous, one float dtype; linear interpolation with
    border padding, in one pass. ``out`` must not alias either input. False if numba is unavailable.
    """
    if not AVAILABLE:
        return False
    if not (outer.shape == inner.shape == out.shape and outer.shape[0] == outer.ndim - 1):
        raise ValueError(
            f"compose needs three (ndim, *S) fields of one shape, got {outer.shape}, {inner.shape}, "
            f"{out.shape}"
        )
    with KERNEL_LOCK:
        set_threads(threads)
        _KERNELS[("bilinear", inner.shape[0])](outer, inner, out, PADDING_CODES["border"], True)
    return True


def set_threads(threads: int) -> None:
    """Use ``threads`` numba threads in this thread's next kernels (clipped to what numba started)."""
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
