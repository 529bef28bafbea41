"""Atlas benchmark: an unbiased template of the 10 sample brain subjects (2D, 2 mm) vs the affine mean.

Subjects: ``sample_data/brain/2d_2mm`` (synthetic deformations of the MNI template, built on first use),
T1 images and label maps. One run of :func:`regcore.atlas.build_template`: the subjects are affinely
aligned (``sitk_affine_mi``) to their plain mean, their arithmetic mean is ``T0`` (the affine mean),
then ``--iterations`` updates with ``--method`` (default bspline: the most accurate classical method on
these subjects in benchmarks/results/sample_brain2d), and the final template is registered to once
more to be measured like the others.

Measured for every template T0 .. Tn: sharpness (mean gradient magnitude, intensity / mm), mean
subject-to-template distance (mm), mean Dice of the subjects' labels warped to it vs its label map
(majority vote of the warped labels), runtime. The affine mean is scored twice:

* "affine mean, affine labels": the affinely aligned labels vs their own majority vote (the affine mean
  with the labels that made it);
* "affine mean, registered labels": row T0, the labels registered to the affine mean with the same
  method as the built template (the same measure as the built template's).

Must reach: the built template's Dice beats both, and its sharpness rises over the iterations.

    .venv/bin/python benchmarks/atlas.py            # ~2-3 min on 2 loaded cores

Writes benchmarks/results/atlas.json and atlas.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def environment() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(report: dict) -> str:
    h = report["history"]
    lines = [
        "# Atlas benchmark: unbiased template vs affine mean",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Environment: {json.dumps(report['environment'])}",
        "",
        f"{report['subjects']} sample brain subjects (2D, 2 mm), method `{report['method']}`, "
        f"{report['iterations']} iterations, initial alignment `{report['affine_method']}`; "
        f"total {report['total_s']:.1f} s.",
        "",
        "| template | sharpness (1/mm) | distance mm | Dice | runtime s |",
        "|---|---|---|---|---|",
    ]
    for row in h:
        name = "T0 (affine mean)" if row["iteration"] == 0 else f"T{row['iteration']}"
        lines.append(
            f"| {name} | {row['sharpness']:.5f} | {row['distance_mm']:.3f} | {row['dice']:.4f} | "
            f"{row['runtime_s']:.1f} |"
        )
    c = report["comparison"]
    lines += [
        "",
        "| template | mean subject-to-template Dice |",
        "|---|---|",
        f"| affine mean, affinely aligned labels vs their majority vote | {c['affine_mean_affine_labels']:.4f} |",
        f"| affine mean, labels registered to it ({report['method']}) | {c['affine_mean_registered']:.4f} |",
        f"| built template T{report['iterations']}, labels registered to it | {c['built_template']:.4f} |",
        "",
        "Must reach:",
        "",
    ]
    for name, ok in report["must_reach"].items():
        lines.append(f"- {name}: {'PASS' if ok else 'FAIL'}")
    lines.append(
        f"- (information) sharpness never falls between iterations: {report['sharpness_non_decreasing']}"
    )
    if report.get("learned"):
        ln = report["learned"]
        lines += [
            "",
            f"Learned template (VoxelMorph-style, {ln['steps']} steps, from the plain mean, no affine "
            f"pre-alignment; information only): sharpness {ln['sharpness']:.5f}, distance "
            f"{ln['distance_mm']:.3f} mm, Dice {ln['dice']:.4f}, {ln['runtime_s']:.1f} s.",
        ]
    lines += [
        "",
        "Runtime per iteration (s): " + ", ".join(f"T{r['iteration']} {r['runtime_s']:.1f}" for r in h),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="bspline")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--engine", default="serial", choices=("serial", "ray"))
    parser.add_argument(
        "--learned-steps", type=int, default=300, help="also learn a VoxelMorph-style template (0 = skip)"
    )
    parser.add_argument("--out", default=str(RESULTS / "atlas"), help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)

    from regcore.atlas import build_template, load_sample_subjects

    subjects = load_sample_subjects(args.subjects)
    t0 = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("template"):
            print(f"[{time.perf_counter() - t0:6.1f} s] {message}", flush=True)

    result = build_template(subjects, args.method, args.iterations, engine=args.engine, progress=progress)
    total = time.perf_counter() - t0
    history = result.history_rows()
    sharp = [r["sharpness"] for r in history]
    built, t0_dice = history[-1]["dice"], history[0]["dice"]
    comparison = {
        "affine_mean_affine_labels": result.initial_alignment_dice,
        "affine_mean_registered": t0_dice,
        "built_template": built,
    }
    report = {
        "command": "python benchmarks/atlas.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": environment(),
        "subjects": len(result.subjects),
        "method": args.method,
        "affine_method": "sitk_affine_mi",
        "iterations": args.iterations,
        "engine": args.engine,
        "total_s": total,
        "history": history,
        "comparison": comparison,
        "must_reach": {
            "built template Dice > affine mean (affinely aligned labels)": built
            > result.initial_alignment_dice,
            "built template Dice > affine mean (labels registered to it, same method)": built > t0_dice,
            "sharpness rises: last > first": sharp[-1] > sharp[0],
        },
        "sharpness_non_decreasing": all(b >= a for a, b in zip(sharp, sharp[1:], strict=False)),
        "warnings": result.warnings,
    }
    if args.learned_steps > 0:
        from regcore.atlas.learned import LearnedTemplateConfig, learn_template

        learned = learn_template(subjects, LearnedTemplateConfig(steps=args.learned_steps))
        report["learned"] = {
            "steps": args.learned_steps,
            "sharpness": learned.sharpness,
            "distance_mm": learned.distance_mm,
            "dice": learned.dice,
            "runtime_s": learned.runtime_s,
            "loss_first_last": [learned.loss[0], learned.loss[-1]],
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0 if all(report["must_reach"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
