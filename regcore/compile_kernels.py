"""Compile regcore's numba kernels once, into numba's on-disk cache, so no user run pays for it.

Each kernel is compiled lazily on its first call with a new type signature (a few seconds
each, ~15-25 s for all on 2 cores) and cached next to its module (``__pycache__``); later
processes load it in well under a second. The set-up commands (``make app``/``make test``)
run this once after installing::

    python -m regcore.compile_kernels        # prints what it compiled and how long it took
"""

from __future__ import annotations

import time

import numpy as np
import torch


def compile_all() -> dict[str, float]:
    """Call every kernel signature regcore uses on tiny inputs; returns seconds per group."""
    from regcore.methods.classical import greedy_kernels
    from regcore.spatial import warp_kernels
    from regcore.spatial.warp import warp

    if not warp_kernels.AVAILABLE:
        return {}
    timings: dict[str, float] = {}
    for shape in ((6, 7), (5, 6, 7)):
        ndim = len(shape)
        start = time.perf_counter()
        image, field = (
            torch.rand(1, 1, *shape),
            torch.rand(1, ndim, *shape),
        )  # float32; float64 compiles on first use
        for mode in ("bilinear", "nearest"):
            warp(image, field, mode, "zeros")
        timings[f"warp {ndim}D"] = time.perf_counter() - start

        start = time.perf_counter()
        ws = greedy_kernels.GreedyWorkspace(shape)
        image = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
        force = np.empty((ndim, *shape), np.float32)
        ws.lncc_force(image, image, 3, force)
        ws.smooth(force, 1.0)
        ws.adam_step(force, np.zeros_like(force), np.zeros_like(force), 1, 0.9, 0.99, 1.0)
        ws.gradient_step(force, 1.0)  # fireants' default optimizer
        ws.demons_force(image, image, np.zeros_like(force), 2, 1.0, force)  # demons, the 2D default
        out = np.empty_like(force)
        ws.compose(force, force, out)
        timings[f"greedy {ndim}D"] = time.perf_counter() - start
    # det J + NDV of `evaluate` and their summary
    from regcore.metrics.deformation_kernels import jacobian_and_ndv_3d, map_summary

    start = time.perf_counter()
    map_summary(*jacobian_and_ndv_3d(np.zeros((3, 4, 5, 6), np.float32)), (1e-9, 1e9))
    timings["deformation metrics 3D"] = time.perf_counter() - start
    from regcore.metrics import overlap_kernels  # Dice counts and HD95/ASSD of `evaluate`

    start = time.perf_counter()
    overlap_kernels.nearest_surface_distances(
        np.zeros((1, 3), np.int64), np.ones(1, np.int16), np.ones((2, 2, 2), np.int16), (1, 1, 1)
    )
    overlap_kernels.label_counts_uint8(np.zeros(4, np.uint8), np.ones(4, np.uint8))
    overlap_kernels.surface_voxels_uint8(np.ones((2, 3, 3), np.uint8))
    timings["label overlap"] = time.perf_counter() - start
    from regcore.io.field_kernels import lps_vectors_3d  # the displacement file `register` writes

    start = time.perf_counter()
    lps_vectors_3d(np.zeros((3, 2, 3, 4), np.float32), np.eye(3))
    timings["displacement file 3D"] = time.perf_counter() - start
    return timings


def main() -> None:
    timings = compile_all()
    if not timings:
        print("numba is not available: regcore uses its torch code paths")
        return
    print("numba kernels ready: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
