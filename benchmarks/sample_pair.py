"""The built-in 2D sample pair (what Home and Register open on): each method against the known true field.

    .venv/bin/python benchmarks/sample_pair.py [--methods demons sitk_demons fireants] [--out ...]

The pair is synthetic (``regcore.data.sample_pair``: two warps of one template, 80 x 96 at 2 mm), so the
true displacement is known. Per method, in one run: mean Dice and HD95 (mm) over the structures, the worst
structure's Dice change, the field error against the truth inside the brain (voxels: mean, max; the identity's
error is the true field's size), and the largest displacement in the four 8 x 8 corners (background, where
nothing should move much) against the largest inside the brain's bounding box. Prints and writes
benchmarks/results/sample_pair.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import write_results  # noqa: E402

CORNER = 8


def measure(name: str, pair) -> dict:
    """One method's row (see the module docstring)."""
    import numpy as np

    from regcore.methods.registry import get
    from regcore.metrics.evaluate import evaluate, evaluate_identity

    fg = pair.fixed_labels.data[0] > 0
    truth = pair.true_displacement
    labels = {"fixed_labels": pair.fixed_labels, "moving_labels": pair.moving_labels}
    if name == "identity":
        u = truth * 0
        row = evaluate_identity(pair.fixed, pair.moving, **labels)
    else:
        spec = get(name)
        result = spec.factory().register(pair.fixed, pair.moving, spec.config_cls())
        u = result.displacement
        row = evaluate(result, **labels)
    before = evaluate_identity(pair.fixed, pair.moving, **labels)["dice"]
    worst = min(row["dice"], key=lambda k: row["dice"][k] - before[k])
    error = (u - truth).norm(dim=1)[0]
    size = u.norm(dim=1)[0]
    corners = (
        np.s_[:CORNER, :CORNER],
        np.s_[:CORNER, -CORNER:],
        np.s_[-CORNER:, :CORNER],
        np.s_[-CORNER:, -CORNER:],
    )
    rows, cols = np.nonzero(fg.numpy())
    box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return {
        "dice_mean": round(float(row["dice_mean"]), 4),
        "hd95_mean_mm": round(float(row["hd95_mean_mm"]), 2),
        "worst_structure": f"{worst} {before[worst]:.3f} -> {row['dice'][worst]:.3f}",
        "field_error_mean_vox": round(float(error[fg].mean()), 2),
        "field_error_max_vox": round(float(error[fg].max()), 2),
        "corner_max_vox": round(max(float(size[c].max()) for c in corners), 2),
        "brain_box_max_vox": round(float(size[box].max()), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["identity", "demons", "sitk_demons", "fireants"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sample_pair"))
    args = parser.parse_args(argv)
    from regcore.data import sample_pair

    pair = sample_pair()
    results = {name: measure(name, pair) for name in args.methods}
    keys = list(next(iter(results.values())))
    lines = [
        f"# Built-in 2D sample pair ({pair.name}) against its true field",
        "",
        f"`python benchmarks/sample_pair.py --methods {' '.join(args.methods)}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, default settings, one run.",
        "",
        "| method | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
        *[f"| {name} | " + " | ".join(str(r[k]) for k in keys) + " |" for name, r in results.items()],
    ]
    markdown = "\n".join(lines) + "\n"
    write_results(args.out, {"pair": pair.name, "results": results}, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
