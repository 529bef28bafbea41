"""``regcore register``: register one pair, write the run folder (:mod:`regcore.run_folder`) and print a summary.

    regcore register --fixed F --moving M --method NAME [--fixed-labels FL --moving-labels ML]
                     [--fixed-landmarks FP --moving-landmarks MP] [--label-names CSV]
                     [--set key=value ...] [--device auto|cpu|cuda] --out DIR [--report] [--compress]

Bad input (a missing file, a bad --set): one line naming it, exit code 2 (:func:`regcore.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from regcore.cli import CliError, parse_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    images = "NIfTI, MHA/MHD, NRRD, a DICOM series folder or .zip"
    parser.add_argument("--fixed", required=True, metavar="IMAGE", help=f"fixed image ({images})")
    parser.add_argument(
        "--moving", required=True, metavar="IMAGE", help="moving image, warped onto the fixed grid"
    )
    parser.add_argument("--method", required=True, help="method name (`regcore methods` lists them)")
    parser.add_argument(
        "--fixed-labels", metavar="IMAGE", help="label map of the fixed image (for Dice, HD95)"
    )
    parser.add_argument("--moving-labels", metavar="IMAGE", help="label map of the moving image")
    parser.add_argument(
        "--fixed-landmarks",
        metavar="CSV",
        help="points (for TRE): x,y,z or x_lps,... in LPS mm; 2D x,y or x_px,... in pixels",
    )
    parser.add_argument(
        "--moving-landmarks", metavar="CSV", help="the same points, same order, in the moving image"
    )
    parser.add_argument(
        "--label-names", metavar="CSV", help="value,name rows naming the labels in the tables"
    )
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto = CUDA when present (default)"
    )
    parser.add_argument(
        "--initial",
        default="none",
        choices=("none", "rigid", "affine"),
        help="run regcore's MI rigid/affine stage before the method (default: none)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the warped image, field and metrics"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--report", action="store_true", help="also write the offline HTML QA report (report.html)"
    )
    parser.add_argument(
        "--compress",
        action="store_true",
        help="write the displacement field gzip-compressed (displacement.nii.gz, on all cores) instead of "
        "displacement.nii (default: uncompressed; gzip saves < 10%% on a float field)",
    )


def _load_inputs(args, read_ahead=None) -> dict:
    """The pair's images, label maps (compact dtype), landmarks and label names; ``read_ahead``: a
    :class:`regcore.readahead.ReadAhead` holding some inputs' inflated bytes already."""
    from concurrent.futures import ThreadPoolExecutor

    from regcore.io import load_image, load_label_names, load_landmarks
    from regcore.register import compact_labels  # uint8 label maps: ~100 MB less during a 1 mm 3D run

    names = load_label_names(args.label_names) if args.label_names else None
    files = {
        "fixed": (args.fixed, False),
        "moving": (args.moving, False),
        "fixed_labels": (args.fixed_labels, True),
        "moving_labels": (args.moving_labels, True),
    }

    def load(path, labels: bool):
        contents = read_ahead.take(path) if read_ahead is not None else None
        if not labels:
            return load_image(path, is_labels=False, contents=contents)
        return compact_labels(load_image(path, is_labels=True, label_names=names, contents=contents))

    with ThreadPoolExecutor(max_workers=2) as pool:  # gzip decompression releases the GIL: two files at once
        loading = {role: pool.submit(load, path, labels) for role, (path, labels) in files.items() if path}
        images = {role: future.result() for role, future in loading.items()}
    fixed, moving = images["fixed"], images["moving"]
    out = {
        "fixed": fixed,
        "moving": moving,
        "label_names": names,
        "fixed_labels": images.get("fixed_labels"),
        "moving_labels": images.get("moving_labels"),
        "fixed_landmarks": load_landmarks(args.fixed_landmarks, geometry=fixed.geometry)
        if args.fixed_landmarks
        else None,
        "moving_landmarks": load_landmarks(args.moving_landmarks, geometry=moving.geometry)
        if args.moving_landmarks
        else None,
    }
    if (out["fixed_labels"] is None) != (out["moving_labels"] is None):
        raise CliError("give both --fixed-labels and --moving-labels, or neither")
    if (out["fixed_landmarks"] is None) != (out["moving_landmarks"] is None):
        raise CliError("give both --fixed-landmarks and --moving-landmarks, or neither")
    return out


def _unchanged_inputs(args, inputs: dict, record) -> dict[str, Path]:
    """Run-folder roles whose image is an input exactly as it was read from a ``.nii.gz`` file (the same
    Image object: not resampled onto the fixed grid, no NaN replaced, one channel): ``save_run`` copies
    those files instead of re-encoding them (~0.1 s of gzip each for a 1 mm brain)."""
    written = {
        "fixed": record.result.fixed,
        "moving": record.result.moving,
        "fixed_labels": record.fixed_labels,
        "moving_labels": record.moving_labels,
    }
    out = {}
    for role, image in written.items():
        path = getattr(args, role)
        if (
            path
            and image is not None
            and image is inputs[role]
            and image.data.shape[0] == 1
            and image.data._version == 0  # never modified in place since it was read
            and str(path).lower().endswith(".nii.gz")
            and not any("NaN/inf" in str(w) for w in image.meta.get("warnings", []))
        ):
            out[role] = Path(path)
    return out


def _progress_printer(quiet: bool):
    if quiet:
        return None
    state = {"last": -1}

    def cb(p):
        pct = int(p.fraction * 10)
        if pct != state["last"]:
            state["last"] = pct
            print(f"  {p.fraction:5.0%} {p.message}", file=sys.stderr)

    return cb


def _json_default(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def run(args) -> int:
    from regcore.readahead import ReadAhead  # standard library only: no torch yet

    # the inputs are read and inflated on a background thread while torch and regcore import (~1.5 s)
    read_ahead = ReadAhead([args.fixed, args.moving, args.fixed_labels, args.moving_labels])
    from regcore.data import Pair
    from regcore.register import register_pair
    from regcore.run_folder import save_run
    from regcore.run_record import RunRecord

    overrides = parse_sets(args.set)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise CliError(f"--out {args.out} exists and is not a folder")
    inputs = _load_inputs(args, read_ahead)
    pair = Pair(name=f"{Path(args.fixed).name} <- {Path(args.moving).name}", **inputs)
    registration = register_pair(
        pair,
        args.method,
        overrides,
        device=args.device,
        progress=_progress_printer(args.quiet),
        initial=args.initial,
    )
    record = RunRecord(pair, registration.result, {}, label=args.method)
    from regcore.atomic import atomic_dir

    # all files or none: an error leaves no partial results in --out; save_run evaluates beside the volume
    # writes (gzip and disk I/O leave a core free) and stores the metrics in record.metrics
    with atomic_dir(args.out) as tmp:
        paths = save_run(
            record,
            tmp,
            compress=args.compress,
            sources=_unchanged_inputs(args, inputs, record),
            pending_metrics=registration.evaluate,
        )
        if args.report:
            from regcore.report import REPORT_FILE, write_report  # matplotlib behind it: only when asked

            paths["report"] = write_report(record, tmp / REPORT_FILE)
    paths = {role: Path(args.out) / p.name for role, p in paths.items()}
    metrics = record.metrics
    summary = {
        k: metrics.get(k)
        for k in (
            "method",
            "dice_mean",
            "hd95_mean_mm",
            "tre_mean_mm",
            "folding_percent",
            "sdlogj",
            "runtime_s",
            "device",
        )
    }
    print(json.dumps(summary, default=_json_default))
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0
