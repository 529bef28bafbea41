"""``regcore segment``: multi-atlas segmentation of one image from a folder of labelled atlases.

    regcore segment --target IMG --atlases DIR --method demons --fusion staple --out DIR
                    [--target-labels LABELS] [--set key=value ...] [--engine serial|ray|inline]

``DIR`` holds ``images/`` and ``labels/`` (the ``regcore.data.load_folder`` layout: a label file belongs to
the image whose stem it starts with, e.g. ``images/s01.nii.gz`` + ``labels/s01_seg.nii.gz``). Atlases
without labels are skipped with a note; the target's own file is never used as an atlas.
Writes ``OUT/fused_labels.nii.gz``, ``OUT/agreement.nii.gz`` (float, 0..1) and, with ``--target-labels``,
``OUT/dice.csv`` (per structure: the fusion, the best single atlas, the mean single atlas; last row "mean").
Bad input raises ValueError naming the file or option: ``regcore.cli.main`` prints one line, exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

FUSIONS = ("majority", "staple", "weighted", "learned")
ENGINES = ("serial", "ray", "inline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="image to segment (NIfTI, MHA, NRRD, DICOM)")
    p.add_argument("--atlases", required=True, help="folder with images/ and labels/ of the atlases")
    p.add_argument("--target-labels", help="the target's true labels: writes dice.csv")
    p.add_argument("--method", default="demons", help="registration method (see `regcore methods`)")
    p.add_argument("--fusion", default="staple", choices=FUSIONS)
    p.add_argument("--set", dest="sets", action="append", default=[], help="method parameter key=value")
    p.add_argument(
        "--engine", default="serial", choices=ENGINES, help="serial | ray (map_registrations) | inline"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", required=True, help="output folder")


def _atlases(folder: str, target_path: Path):
    from regcore.data.folder import load_folder
    from regcore.segment.multi_atlas import Atlas

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"--atlases {folder!r}: not a folder (expected images/ and labels/)")
    ds = load_folder(root)
    atlases, skipped = [], []
    for s in ds.subjects:
        if os.path.realpath(s.files.get("image", "")) == os.path.realpath(target_path):
            continue
        if s.labels is None:
            skipped.append(s.stem)
            continue
        atlases.append(Atlas(s.stem, s.image, s.labels))
    if not atlases:
        problems = "; ".join(ds.errors[:3])
        raise ValueError(
            f"--atlases {folder!r}: no labelled atlas found (need images/<stem>.* with labels/<stem>_seg.*)"
            + (f"; {problems}" if problems else "")
        )
    return atlases, skipped, ds


def _parse_sets(items) -> dict[str, str]:
    """``["key=value", ...]`` -> dict; ValueError (exit 2 in ``regcore.cli.main``, also under ``python -m``)."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def run(args) -> int:
    from regcore.io import load_image, save_image
    from regcore.methods.registry import get
    from regcore.segment.multi_atlas import segment

    target_path = Path(args.target)
    if not target_path.exists():
        raise ValueError(f"--target {args.target!r}: file not found")
    if args.target_labels and not Path(args.target_labels).exists():
        raise ValueError(f"--target-labels {args.target_labels!r}: file not found")
    overrides = _parse_sets(args.sets)
    spec = get(args.method)  # unknown method: ValueError naming it
    spec.make_config(overrides)  # bad --set: ValueError naming the parameter
    target = load_image(target_path, is_labels=False)
    target_labels = load_image(args.target_labels, is_labels=True) if args.target_labels else None
    if target_labels is not None and tuple(target_labels.shape) != tuple(target.shape):
        raise ValueError(
            f"--target-labels {args.target_labels!r}: shape {tuple(target_labels.shape)} differs from the "
            f"target's {tuple(target.shape)}"
        )
    atlases, skipped, ds = _atlases(args.atlases, target_path)
    for name in skipped:
        print(f"note: atlas {name!r} has no label map; skipped")
    for err in ds.errors:
        print(f"note: {err}")

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction:4.0%}] {message}", flush=True)

    result = segment(
        target.with_data(target.data, name=target_path.name),
        atlases,
        args.method,
        args.fusion,
        args.engine,
        target_labels=target_labels,
        overrides=overrides,
        label_names=ds.label_names,
        device=args.device,
        progress=progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_image(result.labels, out / "fused_labels.nii.gz")
    save_image(result.agreement, out / "agreement.nii.gz")
    written = ["fused_labels.nii.gz", "agreement.nii.gz"]
    rows = result.dice_rows()
    if rows:
        with open(out / "dice.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append("dice.csv")
        print(
            f"mean Dice: {result.fusion} {result.dice_mean:.4f}; single atlases "
            + ", ".join(f"{k} {v:.4f}" for k, v in result.atlas_dice.items() if v is not None)
        )
    for w in result.warnings:
        print(f"warning: {w}")
    print(f"wrote {', '.join(written)} to {out}")
    return 0
