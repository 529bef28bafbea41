"""Instance optimisation: how many steps and how much field smoothing, chosen on TRAINING slice positions.

For OASIS slice pairs at training positions (``regcore.data.slices.slice_pairs(split="train")``, the positions
the shipped networks were trained on; the zoo reports on the held-out ones), one learned method's field is
refined by :func:`regcore.methods.learned.refine.refine_displacement` for every (steps, smoothing) of the grid.
Baselines measured in the same run: the network alone and the classical fireants (the best classical method
of the zoo). Per setting: mean Dice, folding %, SDlogJ and the median time (refinement only for +IO rows).

    nice -n 5 .venv/bin/python benchmarks/refine_tuning.py [--method voxelmorph] [--per-axis 4]
        [--steps 25,50] [--smoothing 0.25,0.5,0.75]

Writes benchmarks/results/refine_tuning.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import write_results  # noqa: E402
from _shared_data import shared_folder  # noqa: E402

from regcore.data.slices import slice_pairs  # noqa: E402
from regcore.methods import registry  # noqa: E402
from regcore.methods.learned.refine import refine_displacement  # noqa: E402
from regcore.metrics.deformation import folding_percent, sdlogj  # noqa: E402
from regcore.train.objectives import dice_per_pair  # noqa: E402


def _numbers(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--{name} must be comma-separated numbers, got {text!r}") from None


def _summary(rows: list[dict]) -> dict:
    return {
        "dice_mean": statistics.mean(r["dice"] for r in rows),
        "folding_percent": statistics.mean(r["folding"] for r in rows),
        "sdlogj": statistics.mean(r["sdlogj"] for r in rows),
        "ms_median": 1e3 * statistics.median(r["seconds"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="voxelmorph", help="a learned method with shipped 2D weights")
    ap.add_argument("--per-axis", type=int, default=4, help="training positions per axis (x 2 directions)")
    ap.add_argument("--steps", default="25,50", help="comma-separated refinement steps")
    ap.add_argument("--smoothing", default="0.25,0.5,0.75", help="comma-separated field smoothing sigmas")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "refine_tuning")
    args = ap.parse_args(argv)
    folder = shared_folder("brain3d")
    if folder is None:
        return 0
    torch.set_num_threads(2)
    steps = [int(s) for s in _numbers(args.steps, "steps")]
    grid = list(itertools.product(steps, _numbers(args.smoothing, "smoothing")))
    spec, fire = registry.get(args.method), registry.get("fireants")
    pairs = slice_pairs(folder, "train", per_axis=args.per_axis)
    per: dict[str, list[dict]] = {}

    def add(name: str, fixed_labels, moving_labels, u, seconds: float) -> None:
        per.setdefault(name, []).append(
            {
                "dice": float(dice_per_pair(fixed_labels, moving_labels, u)),
                "folding": folding_percent(u),
                "sdlogj": sdlogj(u),
                "seconds": seconds,
            }
        )

    for pair in pairs:
        fl, ml = pair.fixed_labels.batch().long(), pair.moving_labels.batch().long()
        f, m = pair.fixed.batch(), pair.moving.batch()
        net = spec.factory().register(pair.fixed, pair.moving, spec.make_config())
        add("network alone", fl, ml, net.displacement, net.runtime_s)
        classical = fire.factory().register(pair.fixed, pair.moving, fire.make_config())
        add("fireants", fl, ml, classical.displacement, classical.runtime_s)
        for n, sigma in grid:
            t = time.perf_counter()
            u = refine_displacement(f, m, net.displacement, n, smoothing=sigma, spacing=pair.fixed.spacing)
            add(f"+IO {n} steps, smoothing {sigma:g}", fl, ml, u, time.perf_counter() - t)
    table = {name: _summary(rows) for name, rows in per.items()}
    command = " ".join(["python benchmarks/refine_tuning.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Instance optimisation settings on TRAINING slice positions",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M')}, 2 threads, load {os.getloadavg()[0]:.2f}. "
        f"{len(pairs)} OASIS slice pairs at training positions; method `{args.method}`. The zoo "
        "(`benchmarks/zoo.py`) reports the chosen setting on held-out positions.",
        "",
        "| setting | Dice | folding % | SDlogJ | ms (median) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {t['dice_mean']:.3f} | {t['folding_percent']:.3f} | {t['sdlogj']:.3f} | {t['ms_median']:.0f} |"
        for name, t in table.items()
    ]
    print("\n".join(lines[4:]))
    payload = {"method": args.method, "pairs": len(pairs), "table": table, "per_pair": per}
    write_results(args.out, payload, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
