"""Write an :class:`~regcore.uncertainty.estimate.UncertaintyResult` to disk: NIfTI maps, CSV, JSON.

Files (``save_uncertainty(result, out_dir)``)::

    variance.nii.gz           per-voxel displacement variance (mm^2) on the fixed grid
    std.nii.gz                per-voxel predicted standard deviation (mm)
    mean_displacement.nii.gz  mean field as an ITK displacement field (LPS mm, fixed -> moving)
    label_entropy.nii.gz      label entropy (bits), when the pair has moving labels
    error.nii.gz              actual error |mean - truth| (mm), when the truth is known
    maps.csv                  one row per voxel: index, variance_mm2, std_mm[, label_entropy_bits, error_mm]
    reliability.csv           predicted-std bins -> mean actual error (when the truth is known)
    summary.json              UncertaintyResult.summary()
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from regcore.uncertainty.estimate import UncertaintyResult

FILES = {
    "variance": "variance.nii.gz",
    "std": "std.nii.gz",
    "mean_displacement": "mean_displacement.nii.gz",
    "label_entropy": "label_entropy.nii.gz",
    "error": "error.nii.gz",
    "maps": "maps.csv",
    "reliability": "reliability.csv",
    "summary": "summary.json",
}


def map_image(result: UncertaintyResult, values: torch.Tensor, name: str):
    """A scalar map ``(*S)`` as an Image on the fixed grid."""
    return result.fixed.with_data(values.detach().float().cpu()[None], name=name, is_labels=False)


def scalar_maps(result: UncertaintyResult) -> dict[str, torch.Tensor]:
    """The per-voxel maps by column name (``(*S)`` each)."""
    maps = {"variance_mm2": result.variance_mm2, "std_mm": result.std_mm}
    if result.label_entropy_bits is not None:
        maps["label_entropy_bits"] = result.label_entropy_bits
    if result.error_mm is not None:
        maps["error_mm"] = result.error_mm
    return maps


def maps_csv(result: UncertaintyResult) -> str:
    """Per-voxel CSV text: voxel index columns (i, j[, k]), then every map in :func:`scalar_maps`."""
    maps = {k: v.detach().float().cpu().numpy().ravel() for k, v in scalar_maps(result).items()}
    shape = result.fixed.shape
    index = np.indices(shape).reshape(len(shape), -1)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*"ijk"[: len(shape)], *maps])
    cols = [index[a] for a in range(len(shape))] + [np.round(v, 6) for v in maps.values()]
    w.writerows(zip(*cols))
    return out.getvalue()


def reliability_csv(result: UncertaintyResult) -> str:
    """Reliability bins as CSV text (empty when the truth is unknown)."""
    if result.calibration is None:
        return ""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["bin", "std_low_mm", "std_high_mm", "mean_std_mm", "mean_error_mm", "voxels"])
    for k, b in enumerate(result.calibration.bins):
        w.writerow([k + 1, b.std_low_mm, b.std_high_mm, b.mean_std_mm, b.mean_error_mm, b.voxels])
    return out.getvalue()


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def summary_json(result: UncertaintyResult) -> str:
    """``result.summary()`` as JSON text (NaN written as null)."""
    return json.dumps(_finite(result.summary()), indent=2)


def save_uncertainty(result: UncertaintyResult, out_dir) -> dict[str, Path]:
    """Write the files listed in the module docstring into ``out_dir``; returns ``{role: path}``."""
    from regcore.io import save_displacement, save_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in FILES.items()}
    save_image(map_image(result, result.variance_mm2, "variance_mm2"), paths["variance"])
    save_image(map_image(result, result.std_mm, "std_mm"), paths["std"])
    save_displacement(result.mean_displacement, result.geometry, paths["mean_displacement"])
    if result.label_entropy_bits is not None:
        save_image(map_image(result, result.label_entropy_bits, "label_entropy_bits"), paths["label_entropy"])
    else:
        del paths["label_entropy"]
    if result.error_mm is not None:
        save_image(map_image(result, result.error_mm, "error_mm"), paths["error"])
        paths["reliability"].write_text(reliability_csv(result), encoding="utf-8")
    else:
        del paths["error"], paths["reliability"]
    paths["maps"].write_text(maps_csv(result), encoding="utf-8")
    paths["summary"].write_text(summary_json(result), encoding="utf-8")
    return paths
