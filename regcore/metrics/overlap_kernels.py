"""Compiled CPU backend (numba) of :mod:`regcore.metrics.overlap`: label voxel counts and surface distances.

:func:`label_counts_uint8`: ``|F|``, ``|W|`` and ``|F n W|`` of every label value of two uint8 maps in one
parallel pass (per-thread histograms), instead of three numpy ``bincount`` passes over int64 copies.

:func:`nearest_surface_distances` (behind HD95 and ASSD): for every surface voxel ``p`` of a label in map A,
the distance (mm) to the nearest surface voxel of the SAME label in map B, by searching cube shells of growing
radius ``r = 0, 1, 2, ...`` (voxels) around ``p`` in ``surface_codes_b``: an array of B's grid holding, at each
surface voxel, the code of its label, 0 elsewhere. A voxel of shell ``r`` lies at least ``r * min(spacing)``
mm from ``p``, so once a match at distance ``d`` is found, the search stops at the first shell with
``r * min(spacing) > d``: the result is exact, the same distance a KD-tree over B's points returns.
After registration most surface voxels have a match within a voxel or two, so each point costs tens of
array reads instead of a tree query. A point with no match within ``max_radius`` shells (a label far from
its counterpart) is returned as NaN; the caller measures those few by comparing every pair (a KD-tree when
they are many).

:func:`surface_voxels_uint8` (the surface points both directions start from): every voxel of a non-zero label
with a face neighbour of another label or on the array border, grouped by label value and in raster order
within a label, from two parallel passes (count per slice and label, then fill), instead of numpy boolean
passes, a sort and an index conversion.

2D maps are passed as 3D arrays of depth 1 (:func:`as_volume`). :data:`AVAILABLE` follows
:data:`regcore.spatial.warp_kernels.AVAILABLE`; without numba the caller uses numpy and KD-trees.
"""

from __future__ import annotations

import numpy as np

from regcore.spatial import warp_kernels

AVAILABLE = warp_kernels.AVAILABLE

MAX_RADIUS = 16
"""Shells searched per point (voxels) before it is left to the KD-tree fallback."""


def as_volume(
    points: np.ndarray, codes_map: np.ndarray, spacing
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points (N, 3) int64, codes map (Z, Y, X) int16, spacing (3,) float64)`` for the kernel.

    2D input (points ``(N, 2)``, map ``(H, W)``) gets a leading axis of depth 1 whose spacing is the largest
    in-plane one, so it never lowers the search's ``min(spacing)``.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    if codes_map.ndim == 2:
        points = np.concatenate([np.zeros((len(points), 1), np.int64), points], axis=1)
        codes_map, sp = codes_map[None], np.concatenate([[sp.max()], sp])
    return np.ascontiguousarray(points, np.int64), np.ascontiguousarray(codes_map, np.int16), sp


if AVAILABLE:
    import numba

    _options = {k: v for k, v in warp_kernels.NUMBA_OPTIONS.items() if k != "fastmath"}  # exact comparisons
    _pjit = numba.njit(parallel=True, **_options)

    @_pjit
    def _nearest(points, codes, surface_codes, spacing, max_radius, out):
        nz, ny, nx = surface_codes.shape
        s0, s1, s2 = spacing[0], spacing[1], spacing[2]
        smin = min(s0, min(s1, s2))
        for i in numba.prange(points.shape[0]):
            z, y, x, code = points[i, 0], points[i, 1], points[i, 2], codes[i]
            best = np.inf  # squared mm
            r = 0
            while r <= max_radius and (r * smin) * (r * smin) <= best:
                for dz in range(-r, r + 1):
                    zz = z + dz
                    if zz < 0 or zz >= nz:
                        continue
                    for dy in range(-r, r + 1):
                        yy = y + dy
                        if yy < 0 or yy >= ny:
                            continue
                        on_face = abs(dz) == r or abs(dy) == r
                        dx = -r
                        while dx <= r:  # the whole row on a face of the cube, else its two ends only
                            xx = x + dx
                            if 0 <= xx < nx and surface_codes[zz, yy, xx] == code:
                                d2 = (dz * s0) ** 2 + (dy * s1) ** 2 + (dx * s2) ** 2
                                if d2 < best:
                                    best = d2
                            dx = dx + 1 if on_face or r == 0 else dx + 2 * r
                r += 1
            # exact when no unsearched shell can hold a closer voxel
            out[i] = np.sqrt(best) if (r * smin) * (r * smin) > best else np.nan

    @_pjit
    def _label_counts_uint8(f, w, chunks, out):
        n = f.shape[0]
        partial = np.zeros((chunks, 3, 256), np.int64)
        step = (n + chunks - 1) // chunks
        for t in numba.prange(chunks):
            for i in range(t * step, min(n, (t + 1) * step)):
                a, b = f[i], w[i]
                partial[t, 0, a] += 1
                partial[t, 1, b] += 1
                if a == b:
                    partial[t, 2, a] += 1
        out[:] = partial.sum(axis=0)

    @numba.njit(inline="always", **_options)
    def _on_surface(labels, z, y, x, depth_is_axis):
        nz, ny, nx = labels.shape
        v = labels[z, y, x]
        if y == 0 or y == ny - 1 or x == 0 or x == nx - 1:
            return True
        if labels[z, y - 1, x] != v or labels[z, y + 1, x] != v:
            return True
        if labels[z, y, x - 1] != v or labels[z, y, x + 1] != v:
            return True
        if depth_is_axis:
            if z == 0 or z == nz - 1:
                return True
            if labels[z - 1, y, x] != v or labels[z + 1, y, x] != v:
                return True
        return False

    @_pjit
    def _surface_counts(labels, depth_is_axis, counts):
        nz, ny, nx = labels.shape
        for z in numba.prange(nz):
            for y in range(ny):
                for x in range(nx):
                    v = labels[z, y, x]
                    if v != 0 and _on_surface(labels, z, y, x, depth_is_axis):
                        counts[z, v] += 1

    @_pjit
    def _surface_fill(labels, depth_is_axis, starts, out):
        nz, ny, nx = labels.shape
        for z in numba.prange(nz):
            next_row = starts[z].copy()
            for y in range(ny):
                for x in range(nx):
                    v = labels[z, y, x]
                    if v != 0 and _on_surface(labels, z, y, x, depth_is_axis):
                        i = next_row[v]
                        out[i, 0], out[i, 1], out[i, 2] = z, y, x
                        next_row[v] = i + 1


def surface_voxels_uint8(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(points, counts)`` of a 2D or 3D uint8 label map: the surface voxels' indices ``(N, ndim)`` int64,
    grouped by label value (ascending) and in raster order within a label, and ``counts`` (int64 ``(256,)``,
    points per label value; 0 for the background). A voxel is on the surface of its label when a face
    neighbour has another label or lies outside the array (``mask ^ binary_erosion(mask)`` per label)."""
    volume = np.ascontiguousarray(labels if labels.ndim == 3 else labels[None], np.uint8)
    depth_is_axis = labels.ndim == 3
    per_slice = np.zeros((volume.shape[0], 256), np.int64)
    with warp_kernels.KERNEL_LOCK:
        _surface_counts(volume, depth_is_axis, per_slice)
        counts = per_slice.sum(axis=0)
        label_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        starts = label_start + np.cumsum(per_slice, axis=0) - per_slice  # (Z, 256): first row of each slice
        out = np.empty((int(counts.sum()), 3), np.int64)
        _surface_fill(volume, depth_is_axis, np.ascontiguousarray(starts), out)
    return (out if depth_is_axis else out[:, 1:]), counts


def label_counts_uint8(fixed: np.ndarray, warped: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(|F|, |W|, |F n W|)`` per label value ``0..255`` (int64 ``(256,)`` each) of two uint8 maps of one shape."""
    out = np.empty((3, 256), np.int64)
    with warp_kernels.KERNEL_LOCK:
        _label_counts_uint8(
            np.ascontiguousarray(fixed).ravel(),
            np.ascontiguousarray(warped).ravel(),
            numba.get_num_threads(),
            out,
        )
    return out[0], out[1], out[2]


def nearest_surface_distances(
    points: np.ndarray, codes: np.ndarray, surface_codes: np.ndarray, spacing, max_radius: int = MAX_RADIUS
) -> np.ndarray:
    """Distance (mm, float64 ``(N,)``) from each voxel ``points[i]`` to the nearest voxel of
    ``surface_codes`` equal to ``codes[i]`` (> 0); NaN where none lies within ``max_radius`` shells.

    points: ``(N, ndim)`` voxel indices; codes: ``(N,)`` label codes; surface_codes: ``(*S)`` int16 map;
    spacing: ``ndim`` mm values.
    """
    if not AVAILABLE:
        raise RuntimeError("numba is not available: use KD-trees (regcore.metrics.overlap does)")
    pts, volume, sp = as_volume(points, surface_codes, spacing)
    out = np.empty(len(pts), np.float64)
    with warp_kernels.KERNEL_LOCK:
        _nearest(pts, np.ascontiguousarray(codes, np.int16), volume, sp, int(max_radius), out)
    return out
