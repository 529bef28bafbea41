"""Register labelled atlases to a target and read back their warped images and labels (target grid).

:func:`warp_atlases` runs one :class:`regcore.batch.Task` per atlas through
:func:`regcore.batch.map_registrations` (``engine="serial"`` or ``"ray"``; ``save_outputs=True``, the warped
image and nearest-neighbour warped labels are read back from the task folder), or
:func:`regcore.register.run_registration` in a loop (``engine="inline"``: this process, no task files).
The displacement of each registration maps target (fixed) voxels to atlas (moving) voxels:
``warped = atlas o phi``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regcore.image import Image

__all__ = ["INLINE", "Atlas", "Progress", "WarpedAtlas", "warp_atlases"]

Progress = Callable[[float, str], None]
INLINE = "inline"
"""Engine name for :func:`regcore.register.run_registration` in a loop, in this process, without task files."""


@dataclass(frozen=True)
class Atlas:
    """A labelled atlas: an intensity Image and its label Image (same grid)."""

    name: str
    image: Image
    labels: Image

    def __post_init__(self) -> None:
        if not isinstance(self.image, Image) or self.image.is_labels:
            raise TypeError(f"atlas {self.name!r}: image must be an intensity Image")
        if not isinstance(self.labels, Image) or not self.labels.is_labels:
            raise TypeError(f"atlas {self.name!r}: labels must be a label Image (is_labels=True)")
        if tuple(self.image.shape) != tuple(self.labels.shape):
            raise ValueError(
                f"atlas {self.name!r}: labels shape {tuple(self.labels.shape)} differs from image shape "
                f"{tuple(self.image.shape)}"
            )


@dataclass(frozen=True)
class WarpedAtlas:
    """One atlas after registration to the target: arrays ``(*S)`` on the TARGET grid.

    image: float32 warped intensities; labels: int64 warped labels (nearest); dice: per-structure Dice
    against the target labels (None when unknown); runtime_s: registration time.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    dice: dict[int, float] | None = None
    runtime_s: float | None = None


def _check_atlases(atlases: Sequence[Atlas], target: Image) -> list[Atlas]:
    if isinstance(atlases, Atlas) or not isinstance(atlases, Sequence):
        raise TypeError(f"atlases must be a list of Atlas, got {type(atlases).__name__}")
    if len(atlases) == 0:
        raise ValueError("atlases must hold at least one labelled atlas, got none")
    for k, a in enumerate(atlases):
        if not isinstance(a, Atlas):
            raise TypeError(f"atlases[{k}] must be an Atlas, got {type(a).__name__}")
        if a.image.ndim != target.ndim:
            raise ValueError(f"atlas {a.name!r} is {a.image.ndim}D but the target is {target.ndim}D")
    names = [a.name for a in atlases]
    if len(set(names)) != len(names):
        raise ValueError(f"atlas names must be unique, got {names}")
    return list(atlases)


def _labels_on_target(labels: Image | None, target: Image) -> np.ndarray | None:
    if labels is None:
        return None
    if not isinstance(labels, Image) or not labels.is_labels:
        raise TypeError("target_labels must be a label Image (is_labels=True) or None")
    if not labels.geometry.same_grid(target.geometry):
        from regcore.preprocess import resample_to

        labels = resample_to(labels, target.geometry)
    return labels.data[0].cpu().numpy().astype(np.int64)


def warp_atlases(
    target: Image,
    atlases: Sequence[Atlas],
    method: str = "demons",
    overrides: Mapping[str, Any] | None = None,
    *,
    target_labels: Image | None = None,
    engine: str = "serial",
    out_dir: str | Path | None = None,
    device: str = "auto",
    address: str | None = None,
    progress: Progress | None = None,
) -> tuple[list[WarpedAtlas], list[str]]:
    """Register every atlas to ``target`` with ``method`` through :func:`regcore.batch.map_registrations`.

    Returns ``(warped atlases, warnings)``; an atlas whose registration failed is left out with a warning
    (ValueError when all fail). ``out_dir``: batch folder (reruns skip done atlases); default a temporary one.
    """
    from regcore.batch import Task, map_registrations
    from regcore.data.pairs import Pair
    from regcore.io import load_image
    from regcore.metrics.overlap import dice_per_label

    if not isinstance(target, Image) or target.is_labels:
        raise TypeError("target must be an intensity Image")
    atlases = _check_atlases(atlases, target)
    truth = _labels_on_target(target_labels, target)
    tasks = [
        Task(
            method,
            Pair(
                name=f"{target.name or 'target'} <- {a.name}",
                fixed=target,
                moving=a.image,
                fixed_labels=target_labels,
                moving_labels=a.labels,
                label_names=a.labels.label_names or None,
            ),
            dict(overrides or {}),
            device=device,
            save_outputs=True,
        )
        for a in atlases
    ]

    def callback(status: dict) -> None:
        if progress is not None and status.get("total"):
            progress(
                float(status.get("done", 0)) / float(status["total"]),
                f"registered {status.get('done', 0)}/{status['total']} atlases ({method})",
            )

    if engine == INLINE:
        return _warp_inline(target, atlases, method, overrides, truth, target_labels, device, progress)
    with tempfile.TemporaryDirectory(prefix="regcore-segment-") as tmp:
        batch_dir = Path(out_dir) if out_dir is not None else Path(tmp)
        records = map_registrations(
            tasks, engine=engine, out_dir=batch_dir, address=address, callback=callback
        )
        warped, warnings = [], []
        for atlas, rec in zip(atlases, records):
            if rec.get("status") != "ok":
                warnings.append(f"atlas {atlas.name!r}: registration failed: {rec.get('error')}")
                continue
            outputs = rec.get("outputs") or {}
            image = load_image(outputs["warped"], is_labels=False).data[0].numpy().astype(np.float32)
            labels = load_image(outputs["warped_labels"], is_labels=True).data[0].numpy().astype(np.int64)
            dice = None
            if truth is not None:
                present = [int(v) for v in np.unique(truth) if v != 0]
                dice = dice_per_label(truth, labels, present)
            warped.append(WarpedAtlas(atlas.name, image, labels, dice, rec.get("runtime_s")))
    if not warped:
        raise ValueError("every atlas registration failed: " + "; ".join(warnings))
    return warped, warnings


def _warp_inline(target, atlases, method, overrides, truth, target_labels, device, progress):
    """``engine="inline"``: :func:`regcore.register.run_registration` in a loop, no files (benchmarks)."""
    from regcore.metrics.overlap import dice_per_label
    from regcore.register import run_registration

    warped, warnings = [], []
    for k, a in enumerate(atlases):
        if progress is not None:
            progress(k / len(atlases), f"registering atlas {a.name} ({k + 1}/{len(atlases)}, {method})")
        try:
            result, _ = run_registration(
                target,
                a.image,
                method,
                dict(overrides or {}),
                fixed_labels=target_labels,
                moving_labels=a.labels,
                device=device,
            )
        except (ValueError, TypeError, RuntimeError) as exc:
            warnings.append(f"atlas {a.name!r}: registration failed: {exc}")
            continue
        image = result.warped.data[0].detach().cpu().numpy().astype(np.float32)
        labels = result.extras["warped_labels"].data[0].cpu().numpy().astype(np.int64)
        dice = None
        if truth is not None:
            dice = dice_per_label(truth, labels, [int(v) for v in np.unique(truth) if v != 0])
        warped.append(WarpedAtlas(a.name, image, labels, dice, result.runtime_s))
    if progress is not None:
        progress(1.0, f"registered {len(warped)}/{len(atlases)} atlases ({method})")
    if not warped:
        raise ValueError("every atlas registration failed: " + "; ".join(warnings))
    return warped, warnings
