"""Write one registration pair as training data the recipe's folder source reads (``data = folder``).

Layout written under ``folder`` (a run's ``pair/``)::

    images/fixed.nii.gz, images/moving.nii.gz
    labels/fixed_seg.nii.gz, labels/moving_seg.nii.gz     (only the label maps the pair has)
    pairs.csv                                              manifest: fixed <- moving and moving <- fixed

``TrainConfig.data_path`` = ``pairs.csv`` (read by :func:`regcore.data.load_manifest`), so a single
pair trains in both directions. The moving image (and its labels) are resampled onto the fixed grid
first, because training samples assume both images of a pair share one grid.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

MANIFEST = "pairs.csv"


def _on_fixed_grid(image, fixed):
    """``image`` resampled onto ``fixed.geometry`` (unchanged when already there); None stays None."""
    if image is None or image.geometry.same_grid(fixed.geometry):
        return image
    from regcore.preprocess import resample_to

    return resample_to(image, fixed.geometry)


def write_pair_folder(pair: Any, folder: str | Path) -> Path:
    """Save ``pair`` (a :class:`regcore.data.Pair`) into ``folder``; returns the manifest path.

    Raises ValueError when ``pair`` has no fixed/moving images or they differ in dimensions.
    """
    from regcore.io import save_image

    fixed, moving = getattr(pair, "fixed", None), getattr(pair, "moving", None)
    if fixed is None or moving is None:
        raise ValueError(f"pair must have fixed and moving images, got {type(pair).__name__}")
    if fixed.ndim != moving.ndim:
        raise ValueError(f"pair {pair.name!r}: fixed is {fixed.ndim}D but moving is {moving.ndim}D")
    folder = Path(folder)
    images = {
        "fixed": (fixed, getattr(pair, "fixed_labels", None)),
        "moving": (
            _on_fixed_grid(moving, fixed),
            _on_fixed_grid(getattr(pair, "moving_labels", None), fixed),
        ),
    }
    files: dict[str, dict[str, str]] = {}
    for stem, (image, labels) in images.items():
        files[stem] = {
            "image": save_image(image, folder / "images" / f"{stem}.nii.gz").relative_to(folder).as_posix()
        }
        if labels is not None:
            path = save_image(labels, folder / "labels" / f"{stem}_seg.nii.gz")
            files[stem]["labels"] = path.relative_to(folder).as_posix()
    manifest = folder / MANIFEST
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "fixed", "moving", "fixed_labels", "moving_labels"])
        for a, b in (("fixed", "moving"), ("moving", "fixed")):
            labels = [files[a].get("labels", ""), files[b].get("labels", "")]
            writer.writerow([f"{pair.name}: {a} <- {b}", files[a]["image"], files[b]["image"], *labels])
    return manifest
