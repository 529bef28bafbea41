"""``regcore atlas``: build an unbiased template from many subjects.

    regcore atlas (--images DIR_OR_GLOB [--labels DIR_OR_GLOB] | --sample brain2d [--subjects N])
                  [--method demons] [--set key=value ...] [--iterations 4] [--init affine|mean]
                  [--step 1.0] [--engine serial|ray] [--device auto|cpu|cuda] [--learned --steps N] --out DIR

``--learned [--steps N]`` learns the template with a small registration network instead
(:mod:`regcore.atlas.learned`; writes template, labels, ``loss.csv`` and ``history.json``).

Writes ``DIR/template.nii.gz``, ``DIR/template_labels.nii.gz`` (with labels), ``DIR/template_<i>.nii.gz``
(every iteration), ``DIR/history.csv`` and ``DIR/history.json``. Bad input: one line on stderr, exit 2
(``regcore.cli.main`` turns ValueError/CliError into that).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

SAMPLES = {
    "brain2d": {"dataset": "brain", "dims": 2, "resolution_mm": 2.0},
    "brain2d_1mm": {"dataset": "brain", "dims": 2, "resolution_mm": 1.0},
    "brain3d": {"dataset": "brain", "dims": 3, "resolution_mm": 2.0},
    "shapes2d": {"dataset": "shapes", "dims": 2, "resolution_mm": 1.0},
}
HISTORY_COLUMNS = ("iteration", "sharpness", "distance_mm", "dice", "runtime_s", "registered", "failed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (its images/ subfolder if any) or a glob pattern")
    src.add_argument("--sample", choices=sorted(SAMPLES), help="use the built-in sample subjects")
    parser.add_argument(
        "--labels", help="folder or glob of label maps, matched to the images by name or sorted order"
    )
    parser.add_argument("--subjects", type=int, help="with --sample: how many subjects (default all, 10)")
    parser.add_argument("--method", default="demons", help="registry method of the deformable passes")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    parser.add_argument("--iterations", type=int, default=4, help="template updates (default 4)")
    parser.add_argument(
        "--init", default="affine", choices=("affine", "mean"), help="first template: affine-aligned mean"
    )
    parser.add_argument(
        "--affine-method", default="sitk_affine_mi", help="registry method of the initial affine alignment"
    )
    parser.add_argument(
        "--step", type=float, default=1.0, help="fraction of the mean field removed per update"
    )
    parser.add_argument("--engine", default="serial", choices=("serial", "ray"))
    parser.add_argument("--address", help="Ray cluster to join (with --engine ray)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--learned",
        action="store_true",
        help="learn the template jointly with a small registration network (VoxelMorph-style) instead",
    )
    parser.add_argument("--steps", type=int, default=300, help="with --learned: optimisation steps")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true")


def _load(args):
    from regcore.atlas.subjects import load_sample_subjects, load_subjects

    if args.sample:
        return load_sample_subjects(args.subjects, **SAMPLES[args.sample])
    if args.subjects is not None:
        raise ValueError("--subjects goes with --sample; with --images every matched file is used")
    return load_subjects(args.images, args.labels)


def write_outputs(result, out: Path) -> dict[str, Path]:
    """Template NIfTI(s), history CSV/JSON into ``out``; returns ``{role: path}``."""
    from regcore.io import save_image

    out.mkdir(parents=True, exist_ok=True)
    paths = {"template": save_image(result.template, out / "template.nii.gz")}
    if result.labels is not None:
        paths["template_labels"] = save_image(result.labels, out / "template_labels.nii.gz")
    for i, t in enumerate(result.templates):
        paths[f"template_{i}"] = save_image(t, out / f"template_{i}.nii.gz")
    paths["history_csv"] = out / "history.csv"
    with open(paths["history_csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for row in result.history_rows():
            writer.writerow({k: "" if row[k] is None else row[k] for k in HISTORY_COLUMNS})
    paths["history_json"] = out / "history.json"
    paths["history_json"].write_text(json.dumps(result.to_json(), indent=1, default=str), encoding="utf-8")
    return paths


def run(args) -> int:
    from regcore.atlas.template import build_template
    from regcore.atomic import atomic_dir
    from regcore.cli import CliError, parse_sets
    from regcore.methods.registry import get

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {args.out} exists and is not a folder")
    if args.address and args.engine != "ray":
        raise CliError("--address needs --engine ray")
    get(args.method)  # unknown method -> one line before any loading
    subjects = _load(args)
    progress = None
    if not args.quiet:
        state = {"last": ""}

        def progress(fraction: float, message: str) -> None:
            if message != state["last"]:
                state["last"] = message
                print(f"  {fraction:5.0%} {message}", file=sys.stderr)

    if args.learned:
        return _run_learned(args, subjects, progress)
    result = build_template(
        subjects,
        args.method,
        args.iterations,
        parse_sets(args.set),
        init=args.init,
        affine_method=args.affine_method,
        step=args.step,
        engine=args.engine,
        address=args.address,
        device=args.device,
        progress=progress,
    )
    with atomic_dir(args.out) as tmp:
        paths = write_outputs(result, Path(tmp))
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(json.dumps({"subjects": len(result.subjects), "history": result.history_rows()}, default=str))
    print(f"wrote {', '.join(str(out / p.name) for p in paths.values())}", file=sys.stderr)
    return 0


def _run_learned(args, subjects, progress) -> int:
    """``--learned``: :func:`regcore.atlas.learned.learn_template`; writes the template, labels, history."""
    from regcore.atlas.learned import LearnedTemplateConfig, learn_template
    from regcore.atomic import atomic_dir
    from regcore.cli import CliError
    from regcore.io import save_image

    if args.set:
        raise CliError("--set goes with a registry --method; --learned takes --steps")
    if args.steps < 1:
        raise CliError(f"--steps must be >= 1, got {args.steps}")
    result = learn_template(
        subjects, LearnedTemplateConfig(steps=args.steps), device=args.device, progress=progress
    )
    summary = {
        "subjects": len(subjects),
        "learned": True,
        "steps": args.steps,
        "sharpness": result.sharpness,
        "distance_mm": result.distance_mm,
        "dice": result.dice,
        "runtime_s": result.runtime_s,
    }
    with atomic_dir(args.out) as tmp:
        save_image(result.template, Path(tmp) / "template.nii.gz")
        if result.labels is not None:
            save_image(result.labels, Path(tmp) / "template_labels.nii.gz")
        with open(Path(tmp) / "loss.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "loss"])
            writer.writerows(enumerate(result.loss, start=1))
        (Path(tmp) / "history.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps(summary))
    print(f"wrote {Path(args.out)}", file=sys.stderr)
    return 0
