"""Real 2D training and evaluation pairs cut from labelled 3D volumes, with a held-out split.

Two labelled brain volumes give hundreds of 2D pairs: the same slice position of two subjects,
along each axis. Slice positions are split by a fixed rule so that no method is trained, or
tuned, on the positions it is evaluated on: position ``p`` along an axis is *held out* when
``(p // BLOCK) % 3 == 2`` (blocks of ``BLOCK`` consecutive slices, one block in three), so
neighbouring training slices never sit next to a held-out one by more than a block edge.

    >>> train = slice_pairs("../shared/data/brain3d", split="train")      # list[Pair], 2D
    >>> test = slice_pairs("../shared/data/brain3d", split="held_out", per_axis=4)

Each pair's fixed and moving are 2D Images (spacing of the two in-plane axes, origin 0) with
their label maps; ``meta`` records the axis, the position and the two subjects.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from regcore.data.pairs import Pair
from regcore.image import Image

BLOCK = 6
SPLITS = ("train", "held_out", "all")


def split_of(position: int) -> str:
    """``"held_out"`` or ``"train"`` for a slice position (voxel index along its axis)."""
    return "held_out" if (int(position) // BLOCK) % 3 == 2 else "train"


def _slice(array: np.ndarray, axis: int, position: int) -> np.ndarray:
    return np.take(array, position, axis=axis)


def _image2d(volume: Image, axis: int, position: int, labels: bool) -> Image:
    data = _slice(volume.data[0].numpy(), axis, position)
    spacing = tuple(s for i, s in enumerate(volume.spacing) if i != axis)
    return Image.from_array(
        data.astype(np.int64 if labels else np.float32), spacing=spacing, is_labels=labels
    )


def slice_pairs(
    folder: str | os.PathLike,
    split: str = "train",
    *,
    axes: tuple[int, ...] = (0, 1, 2),
    stride: int = 3,
    per_axis: int | None = None,
    min_foreground: float = 0.25,
) -> list[Pair]:
    """2D pairs (same axis and position, every ordered pair of labelled subjects) from a 3D folder.

    Args:
        folder: a :func:`regcore.data.load_folder` layout of 3D images with label maps (subjects
            without labels are skipped).
        split: ``"train"``, ``"held_out"`` (see :func:`split_of`) or ``"all"``.
        axes: tensor axes to slice along.
        stride: keep every ``stride``-th position of the split.
        per_axis: keep at most this many positions per axis, evenly spread (None = all).
        min_foreground: keep positions where both label slices cover at least this fraction of the
            largest labelled slice along that axis (drops the near-empty ends).
    Raises:
        ValueError: unknown split, or fewer than two labelled 3D subjects in ``folder``.
    """
    from regcore.data.folder import load_folder

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    ds = load_folder(folder)
    subjects = [s for s in ds.subjects if s.labels is not None and s.image.ndim == 3]
    if len(subjects) < 2:
        raise ValueError(
            f"{folder} needs at least two labelled 3D images for slice pairs, found {len(subjects)}"
        )
    names = ds.label_names
    pairs: list[Pair] = []
    for axis in axes:
        counts = [
            np.count_nonzero(s.labels.data[0].numpy(), axis=tuple(a for a in range(3) if a != axis))
            for s in subjects
        ]
        enough = np.minimum.reduce([c / max(c.max(), 1) for c in counts]) >= min_foreground
        positions = [p for p in range(len(enough)) if enough[p] and (split == "all" or split_of(p) == split)]
        positions = positions[::stride]
        if per_axis is not None and len(positions) > per_axis:
            positions = [
                positions[i] for i in np.linspace(0, len(positions) - 1, per_axis).round().astype(int)
            ]
        for p in positions:
            for f, m in itertools.permutations(subjects, 2):
                pairs.append(
                    Pair(
                        name=f"{f.stem} <- {m.stem}, axis {axis} slice {p}",
                        fixed=_image2d(f.image, axis, p, False),
                        moving=_image2d(m.image, axis, p, False),
                        fixed_labels=_image2d(f.labels, axis, p, True),
                        moving_labels=_image2d(m.labels, axis, p, True),
                        label_names=names,
                        modality="t1",
                        meta={
                            "source": str(Path(folder)),
                            "axis": axis,
                            "position": p,
                            "split": split_of(p),
                            "fixed": f.stem,
                            "moving": m.stem,
                        },
                    )
                )
    return pairs
