"""Per-voxel vector lengths: ``regcore.spatial.lengths`` (root of the sum of squares) against ``Tensor.norm(dim=1)``.

    nice -n 5 .venv/bin/python benchmarks/vector_lengths.py [--repeats 7]

The baseline is what regcore called until 2026-12-04 (fireants' step size twice per iteration, svf's automatic
squaring count, the inverse-consistency and field-error metrics): ``field.norm(dim=1)``, which torch 2.13 runs on the
CPU far more slowly than the three elementwise operations it stands for. Fields ``(1, n, *S)`` at the 1 mm brain's
full and half resolution and a 2D slice; the per-voxel lengths and their maximum; median over ``--repeats`` after
one warm-up call, both in the same process, and the largest relative difference between the two results.
Prints and writes benchmarks/results/vector_lengths.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _results import run_meta, write_results  # noqa: E402

from regcore.spatial.lengths import max_vector_length, vector_lengths  # noqa: E402

SHAPES = ((1, 3, 160, 192, 224), (1, 3, 80, 96, 112), (1, 2, 160, 224))
OPERATIONS = {
    "lengths": (lambda u: u.norm(dim=1), vector_lengths),
    "max length": (lambda u: u.norm(dim=1).amax(), max_vector_length),
}


def seconds(fn, u, repeats: int) -> float:
    fn(u)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(u)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vector_lengths"))
    args = parser.parse_args(argv)
    rows = []
    for shape in SHAPES:
        u = 5 * torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        for name, (baseline_fn, ours_fn) in OPERATIONS.items():
            reference, ours_value = baseline_fn(u), ours_fn(u)
            difference = float(((ours_value - reference).abs() / reference.abs().clamp_min(1e-12)).max())
            baseline, ours = seconds(baseline_fn, u, args.repeats), seconds(ours_fn, u, args.repeats)
            row = {
                "shape": list(shape),
                "operation": name,
                "norm_ms": 1e3 * baseline,
                "regcore_ms": 1e3 * ours,
                "ratio": ours / baseline,
                "max_relative_difference": difference,
            }
            rows.append(row)
            print(
                f"{shape} {name}: norm(dim=1) {row['norm_ms']:.1f} ms, regcore {row['regcore_ms']:.2f} ms "
                f"(x{row['ratio']:.3f}), largest relative difference {difference:.1e}",
                flush=True,
            )
    meta = run_meta(repeats=args.repeats)
    lines = [
        "# Per-voxel vector lengths: root of the sum of squares against Tensor.norm(dim=1)",
        "",
        f"`nice -n 5 .venv/bin/python benchmarks/vector_lengths.py --repeats {args.repeats}`; {meta['date']}, "
        f"{meta['threads']} threads, torch {meta['torch']}. Median; ratio = regcore / norm.",
        "",
        "| field (B, n, *S) | operation | norm(dim=1) ms | regcore ms | ratio | largest relative difference |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {tuple(r['shape'])} | {r['operation']} | {r['norm_ms']:.1f} | {r['regcore_ms']:.2f} | {r['ratio']:.3f} | "
        f"{r['max_relative_difference']:.1e} |"
        for r in rows
    ]
    write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
