"""``regcore uncertainty``: estimate a registration's uncertainty and write its maps.

    regcore uncertainty --fixed F --moving M [--method demons] [--estimator tta|ensemble|sampling]
                        [--members N] [--methods a,b] [--set key=value ...] [--checkpoint model.pt]
                        [--fixed-labels FL --moving-labels ML] [--true-displacement FIELD]
                        [--device auto|cpu|cuda] [--seed S] --out DIR

Writes ``variance.nii.gz``, ``std.nii.gz``, ``mean_displacement.nii.gz``, ``label_entropy.nii.gz``
(with labels), ``error.nii.gz`` and ``reliability.csv`` (with ``--true-displacement``, an ITK
displacement field on the fixed grid, fixed -> moving), ``maps.csv`` and ``summary.json``
(:mod:`regcore.uncertainty.export`). Bad input: one line naming the file or option, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fixed", required=True, help="fixed image")
    parser.add_argument("--moving", required=True, help="moving image")
    parser.add_argument("--method", default="demons", help="registry method (TTA; default demons)")
    parser.add_argument("--estimator", default="tta", choices=("tta", "ensemble", "sampling"))
    parser.add_argument(
        "--members", type=int, default=6, help="augmentations (tta), samples (sampling) or ensemble members"
    )
    parser.add_argument("--methods", help="ensemble: comma-separated methods (default: --method)")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="parameter of --method (repeatable)"
    )
    parser.add_argument("--checkpoint", default="", help="sampling: prob_voxelmorph weights (model.pt)")
    parser.add_argument("--fixed-labels", help="fixed label map (foreground of the calibration)")
    parser.add_argument("--moving-labels", help="moving label map (label probability and entropy maps)")
    parser.add_argument(
        "--true-displacement", help="ITK displacement field on the fixed grid (fixed -> moving): calibration"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true")


def _inputs(args):
    from regcore.data import Pair
    from regcore.io import load_displacement, load_image

    fixed = load_image(args.fixed, is_labels=False)
    moving = load_image(args.moving, is_labels=False)
    fixed_labels = load_image(args.fixed_labels, is_labels=True) if args.fixed_labels else None
    moving_labels = load_image(args.moving_labels, is_labels=True) if args.moving_labels else None
    for flag, path, lab, img in (
        ("--fixed-labels", args.fixed_labels, fixed_labels, fixed),
        ("--moving-labels", args.moving_labels, moving_labels, moving),
    ):
        if lab is not None and lab.shape != img.shape:
            raise ValueError(f"{flag} {path}: shape {lab.shape} does not match its image's shape {img.shape}")
    truth = None
    if args.true_displacement:
        truth, geometry = load_displacement(args.true_displacement)
        if not geometry.same_grid(fixed.geometry):
            raise ValueError(
                f"--true-displacement {args.true_displacement}: its grid {geometry.shape} is not the fixed "
                f"image's grid {fixed.shape}"
            )
    return Pair(
        name=f"{Path(args.fixed).name} <- {Path(args.moving).name}",
        fixed=fixed,
        moving=moving,
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
        true_displacement=truth,
    )


def run(args: argparse.Namespace) -> int:
    from regcore.atomic import atomic_dir
    from regcore.cli import parse_sets
    from regcore.uncertainty.estimate import estimate_uncertainty
    from regcore.uncertainty.export import save_uncertainty, summary_json

    if args.members < 2:
        raise ValueError(f"--members must be >= 2, got {args.members}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    try:
        overrides = parse_sets(args.set)
    except Exception as e:  # noqa: BLE001 - regcore.cli's CliError (a different class under `python -m`)
        raise ValueError(str(e)) from None
    for flag in ("fixed", "moving", "fixed_labels", "moving_labels", "true_displacement", "checkpoint"):
        value = getattr(args, flag)
        if value and not Path(value).exists():
            raise ValueError(f"--{flag.replace('_', '-')} {value}: file not found")
    pair = _inputs(args)

    def progress(fraction: float, message: str) -> None:
        if not args.quiet:
            print(f"  {fraction:5.0%} {message}", file=sys.stderr)

    result = estimate_uncertainty(
        pair,
        args.estimator,
        method=args.method,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None,
        overrides=overrides,
        members=args.members,
        checkpoint=args.checkpoint,
        device=args.device,
        seed=args.seed,
        progress=progress,
    )
    with atomic_dir(out) as tmp:
        paths = save_uncertainty(result, tmp)
    print(summary_json(result))
    if not args.quiet:
        for role, p in paths.items():
            print(f"  {role}: {out / p.name}", file=sys.stderr)
    return 0
