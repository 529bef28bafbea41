"""LNCC's local sums: regcore's shifted-sum separable filter against one 1D convolution per axis (the baseline).

    nice -n 5 .venv/bin/python benchmarks/separable_filter.py [--repeats 7]

``regcore.losses.separable.separable_filter`` correlates each channel with a 1D kernel along every axis; LNCC
(dense, svf, bspline, learned training and instance optimisation) calls it five times per loss. The baseline is what
it did until 2026-12-04: ``conv3d`` / ``conv2d`` with a ``(k, 1, 1)`` kernel per axis, which torch runs on the CPU
through its im2col path. Forward + backward of ``(filter(x) ** 2).sum()`` on LNCC's five channels, at the sizes the
3D pyramid and a 2D slice use; median over ``--repeats`` after two warm-up calls, both in the same process, and the
largest difference between the two outputs. Prints and writes benchmarks/results/separable_filter.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _results import run_meta, write_results  # noqa: E402

from regcore.losses.separable import separable_filter  # noqa: E402
from regcore.spatial.smooth import gaussian_kernel_1d  # noqa: E402

SHAPES = ((1, 5, 80, 96, 112), (1, 5, 40, 48, 56), (1, 5, 160, 224))
"""LNCC's five channels at the 1 mm brain's half and quarter resolution, and a 2D OASIS slice."""
KERNELS = {"box 7": torch.ones(7), "gaussian 9": gaussian_kernel_1d(2.0, radius=4)}


def convolution_filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The baseline: one zero-padded 1D convolution per axis."""
    ndim = x.ndim - 2
    conv = F.conv3d if ndim == 3 else F.conv2d
    out = x.reshape(-1, 1, *x.shape[2:])
    for axis in range(ndim):
        view, pads = [1, 1] + [1] * ndim, [0] * ndim
        view[2 + axis], pads[axis] = kernel.numel(), kernel.numel() // 2
        out = conv(out, kernel.view(view), padding=tuple(pads))
    return out.reshape(x.shape)


def seconds(fn, x, kernel, repeats: int) -> float:
    times = []
    for k in range(repeats + 2):
        start = time.perf_counter()
        fn(x, kernel).square().sum().backward()
        if k >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "separable_filter"))
    args = parser.parse_args(argv)
    rows = []
    for shape in SHAPES:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
        for name, kernel in KERNELS.items():
            difference = float((separable_filter(x, kernel) - convolution_filter(x, kernel)).abs().max())
            baseline = seconds(convolution_filter, x, kernel, args.repeats)
            ours = seconds(separable_filter, x, kernel, args.repeats)
            row = {
                "shape": list(shape),
                "kernel": name,
                "convolution_ms": 1e3 * baseline,
                "shifted_sum_ms": 1e3 * ours,
                "ratio": ours / baseline,
                "max_difference": difference,
            }
            rows.append(row)
            print(
                f"{shape} {name}: convolution {row['convolution_ms']:.1f} ms, shifted sums {row['shifted_sum_ms']:.1f} ms "
                f"(x{row['ratio']:.2f}), largest difference {difference:.1e}",
                flush=True,
            )
    meta = run_meta(repeats=args.repeats)
    lines = [
        "# LNCC local sums: shifted sums against 1D convolutions",
        "",
        f"`nice -n 5 .venv/bin/python benchmarks/separable_filter.py --repeats {args.repeats}`; {meta['date']}, "
        f"{meta['threads']} threads, torch {meta['torch']}. Forward + backward, median; ratio = shifted / convolution.",
        "",
        "| shape (B, C, *S) | kernel | convolution ms | shifted sums ms | ratio | largest difference |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {tuple(r['shape'])} | {r['kernel']} | {r['convolution_ms']:.1f} | {r['shifted_sum_ms']:.1f} | "
        f"{r['ratio']:.2f} | {r['max_difference']:.1e} |"
        for r in rows
    ]
    write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
