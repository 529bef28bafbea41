"""Training pairs on the model grid: synthetic shapes, sample brains, or a folder/manifest.

Every source yields the same dict of tensors, all on the model grid ``T = train_shape``:

* ``moving``, ``fixed``: ``(1, *T)`` float in [0, 1] (normalised like inference does);
* ``moving_labels``, ``fixed_labels``: ``(1, *T)`` int64 (0 = background/padding);
* ``true_displacement``: ``(ndim, *T)`` voxels, fixed -> moving (zeros when unknown);
* ``has_true``: bool tensor, whether the ground-truth field is known.

Randomness comes only from the numpy Generator passed in, so a step's batch depends on
``(seed, step)`` alone and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from regcore.nets.inputs import normalise_intensity, plan_model_grid, to_model_grid
from regcore.nets.spatial_ops import affine_to_displacement, resize_image
from regcore.spatial.lengths import max_vector_length
from regcore.spatial.warp import warp, warp_labels
from regcore.train.config import DataSource, TrainConfig

Sample = dict[str, torch.Tensor]


# -- synthetic shapes (SynthMorph-style) ------------------------------------------------------


def _smooth_field(
    shape: tuple[int, ...], magnitude: float, scale: float, rng: np.random.Generator
) -> torch.Tensor:
    """Random smooth displacement ``(1, n, *shape)`` (voxels), max |u| = magnitude."""
    coarse = tuple(max(2, int(round(s / scale))) for s in shape)
    noise = torch.from_numpy(rng.standard_normal((1, len(shape), *coarse)).astype(np.float32))
    u = resize_image(noise, shape)
    return u * (magnitude / max_vector_length(u).clamp_min(1e-6))


def _random_affine(
    shape: tuple[int, ...], rng: np.random.Generator, rotation_deg: float, scale: float, shift_vox: float
) -> torch.Tensor:
    """Voxel affine ``(1, n, n+1)`` about the grid centre (fixed voxel -> moving voxel)."""
    n = len(shape)
    if n == 2:
        a = math.radians(rng.uniform(-rotation_deg, rotation_deg))
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    else:
        from scipy.spatial.transform import Rotation

        rot = Rotation.from_rotvec(np.radians(rng.uniform(-rotation_deg, rotation_deg, 3))).as_matrix()
    m = rot @ np.diag(np.exp(rng.uniform(-scale, scale, n)))
    c = (np.array(shape) - 1) / 2.0
    t = c - m @ c + rng.uniform(-shift_vox, shift_vox, n)
    return torch.tensor(np.concatenate([m, t[:, None]], 1)[None], dtype=torch.float32)


def shapes_pair(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    max_displacement: float | None = None,
    affine: bool = True,
) -> Sample:
    """One synthetic pair with known displacement (fixed -> moving).

    A random label map ``L`` is the moving label map; the fixed label map is ``L o psi`` with a
    random smooth (and optionally affine) ``psi``, so ``moving o psi = fixed`` and the true
    displacement is ``psi - id``. Both are rendered with the same random per-label contrast
    (:func:`regcore.data.synth.render`), so intensity similarity is meaningful.
    """
    from regcore.data.synth import random_label_map, render

    shape = tuple(int(s) for s in shape)
    n_labels = int(rng.integers(6, 17))
    labels = torch.from_numpy(random_label_map(shape, n_labels, rng))[None, None]
    mag = max_displacement if max_displacement is not None else min(shape) / 16.0
    u = _smooth_field(shape, float(rng.uniform(0.3, 1.0)) * mag, min(shape) / 6.0, rng)
    if affine:
        u = u + affine_to_displacement(_random_affine(shape, rng, 8.0, 0.08, min(shape) / 24.0), shape)
    fixed_labels = warp_labels(labels, u)
    render_seed = int(rng.integers(2**31))
    moving = render(labels[0, 0].numpy(), np.random.default_rng(render_seed))
    fixed = render(fixed_labels[0, 0].numpy(), np.random.default_rng(render_seed))
    return {
        "moving": torch.from_numpy(moving)[None],
        "fixed": torch.from_numpy(fixed)[None],
        "moving_labels": labels[0],
        "fixed_labels": fixed_labels[0],
        "true_displacement": u[0],
        "has_true": torch.tensor(True),
    }


def deformed_self_pair(sample: Sample, rng: np.random.Generator, max_displacement_vox: float) -> Sample:
    """One image of a real pair and a randomly deformed copy of it, with the known field (fixed -> moving).

    The moving image (and labels) are one side of ``sample`` drawn at random; the fixed ones are the same
    image warped by a random smooth field plus a small affine, so ``moving o (id + u) = fixed`` exactly
    as in :func:`shapes_pair`. Real anatomy, many more deformations than the real pairs hold.
    """
    side = "fixed" if rng.random() < 0.5 else "moving"
    image, labels = sample[side][None], sample[f"{side}_labels"][None]
    shape = tuple(image.shape[2:])
    u = _smooth_field(shape, float(rng.uniform(0.3, 1.0)) * max_displacement_vox, min(shape) / 6.0, rng)
    u = u + affine_to_displacement(_random_affine(shape, rng, 4.0, 0.04, min(shape) / 32.0), shape)
    return {
        "moving": image[0],
        "fixed": warp(image, u)[0],
        "moving_labels": labels[0],
        "fixed_labels": warp_labels(labels, u)[0],
        "true_displacement": u[0],
        "has_true": torch.tensor(True),
    }


# -- real pairs (sample brains, folders) -------------------------------------------------------


def _centre_fit(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Centre crop/zero-pad the spatial axes of ``(C, *S)`` to ``shape``."""
    for axis, want in enumerate(shape, start=1):
        have = x.shape[axis]
        if have > want:
            start = (have - want) // 2
            x = x.narrow(axis, start, want)
        elif have < want:
            lo = (want - have) // 2
            x = F.pad(x, _pad_arg(x.ndim, axis, lo, want - have - lo))
    return x


def _pad_arg(ndim: int, axis: int, lo: int, hi: int) -> list[int]:
    """``F.pad`` argument padding only ``axis`` of an ``ndim``-D tensor by (lo, hi)."""
    out = [0] * (2 * ndim)
    k = ndim - 1 - axis  # F.pad lists the last axis first
    out[2 * k], out[2 * k + 1] = lo, hi
    return out


def pair_to_sample(pair: Any, config: TrainConfig) -> Sample:
    """A ``regcore.data.Pair`` (moving already on the fixed grid) -> a sample on the model grid."""
    fixed, moving = pair.fixed, pair.moving
    if fixed.ndim != config.dims:
        raise ValueError(
            f"pair {getattr(pair, 'name', '')!r} is {fixed.ndim}D but config.dims = {config.dims}"
        )
    grid = plan_model_grid(fixed.shape, fixed.spacing, config.spacing_mm, 1)
    img = lambda im: normalise_intensity(to_model_grid(im.batch(), grid))[0]  # noqa: E731
    lab = lambda im: (
        to_model_grid_labels(im.batch(), grid)[0]
        if im is not None  # noqa: E731
        else torch.zeros((1, *grid.resized_shape), dtype=torch.long)
    )
    out = {
        "moving": img(moving),
        "fixed": img(fixed),
        "moving_labels": lab(pair.moving_labels),
        "fixed_labels": lab(pair.fixed_labels),
    }
    true = getattr(pair, "true_displacement", None)
    if true is not None:
        from regcore.nets.spatial_ops import resize_field

        out["true_displacement"] = resize_field(true.float(), grid.resized_shape)[0]
    else:
        out["true_displacement"] = torch.zeros((config.dims, *grid.resized_shape))
    shape = tuple(config.train_shape)
    out = {k: _centre_fit(v, shape) for k, v in out.items()}
    out["has_true"] = torch.tensor(true is not None)
    return out


def to_model_grid_labels(labels: torch.Tensor, grid) -> torch.Tensor:
    """Nearest-neighbour resample of a label batch ``(B, 1, *S)`` to the resized grid."""
    if grid.resized_shape == grid.image_shape:
        return labels.long()
    return F.interpolate(labels.float(), size=grid.resized_shape, mode="nearest").long()


def _brain_pairs(config: TrainConfig, max_subjects: int = 8) -> list[Any]:
    """All ordered pairs of the sample brain subjects (moving != fixed)."""
    from regcore.data import sample_pair

    pairs = []
    for f in range(max_subjects):
        for m in range(max_subjects):
            if f == m:
                continue
            try:
                pairs.append(
                    sample_pair(
                        dataset="brain", dims=config.dims, fixed=f, moving=m, resolution_mm=config.spacing_mm
                    )
                )
            except (ValueError, IndexError):
                continue
    if not pairs:
        raise ValueError(
            "no sample brain pairs could be built (regcore.data.sample_pair failed for every index)"
        )
    return pairs


def _folder_pairs(config: TrainConfig) -> list[Any]:
    from pathlib import Path

    from regcore import data

    path = Path(config.data_path)
    if not path.exists():
        raise ValueError(f"TrainConfig.data_path does not exist: {path}")
    ds = data.load_manifest(path) if path.suffix.lower() == ".csv" else data.load_folder(path)
    pairs = list(ds.pairs())
    if not pairs:
        raise ValueError(f"no usable pairs in {path}: {getattr(ds, 'errors', [])}")
    return pairs


# -- augmentation -------------------------------------------------------------------------------


def random_crop(sample: Sample, shape: tuple[int, ...], rng: np.random.Generator) -> Sample:
    """The same random window ``shape`` of every spatial value of ``sample`` (images, labels ``(C, *S)`` and
    the field ``(n, *S)``; voxel displacements stay valid because both images keep the same window)."""
    full = sample["fixed"].shape[1:]
    window = tuple(
        slice(o, o + c) for o, c in ((int(rng.integers(0, s - c + 1)), c) for s, c in zip(full, shape))
    )
    return {k: v[(slice(None), *window)] if v.ndim > 1 else v for k, v in sample.items()}


def augment_intensity(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random gamma, contrast/brightness and noise on a [0, 1] image ``(1, *T)``; stays in [0, 1]."""
    x = x.clamp(0, 1) ** float(np.exp(rng.normal(0.0, 0.25)))
    x = x * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.1, 0.1))
    x = x + float(rng.uniform(0.0, 0.03)) * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    return x.clamp(0, 1)


def flip_sample(sample: Sample, axis: int) -> Sample:
    """Mirror a sample along spatial ``axis`` (0-based); the true field's component ``axis`` changes sign."""
    out = {k: (v.flip(axis + 1) if v.ndim > 1 else v) for k, v in sample.items()}
    out["true_displacement"] = out["true_displacement"].clone()
    out["true_displacement"][axis] *= -1
    return out


# -- the source ----------------------------------------------------------------------------------


@dataclass
class PairSource:
    """Draws training batches and fixed validation pairs for a :class:`TrainConfig`."""

    config: TrainConfig
    _real: list[Sample] = field(default_factory=list)
    _val: Sample | None = None
    _pool: list[Sample] | None = None
    orientation: str | None = None
    """Orientation codes of the real pairs' fixed images (``Geometry.orientation_codes()``), None for shapes."""

    def __post_init__(self) -> None:
        c = self.config
        pairs: list[Any] = []
        if c.data in (DataSource.BRAIN, DataSource.MIXED):
            pairs = _brain_pairs(c)
        elif c.data == DataSource.FOLDER:
            pairs = _folder_pairs(c)
        elif c.data == DataSource.SLICES:
            from regcore.data.slices import slice_pairs

            pairs = list(slice_pairs(c.data_path, "train"))
        self._real = [pair_to_sample(p, c) for p in pairs]
        if pairs:
            self.orientation = pairs[0].fixed.geometry.orientation_codes()

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """Axes the augmentation may mirror. 3D pairs of known orientation: the left-right axis only (a brain
        mirrored left-right is still a plausible brain; upside down or back to front it is not). Otherwise (2D,
        synthetic shapes) every axis but the first, as the shipped 2D recipes were trained."""
        if self.config.dims == 3 and self.orientation:
            return tuple(k for k, code in enumerate(self.orientation) if code in "LR")
        return tuple(range(1, self.config.dims))

    def _draw(self, rng: np.random.Generator, use_real: bool) -> Sample:
        if use_real:
            return self._real[int(rng.integers(len(self._real)))]
        if self.config.synthetic_pool:
            if self._pool is None:  # depends on the seed only, so resumed runs see the same pool
                g = np.random.default_rng([self.config.seed, 777])
                self._pool = [
                    shapes_pair(tuple(self.config.train_shape), g) for _ in range(self.config.synthetic_pool)
                ]
            return self._pool[int(rng.integers(len(self._pool)))]
        return shapes_pair(tuple(self.config.train_shape), rng, affine=True)

    def batch(self, rng: np.random.Generator, batch_size: int | None = None) -> Sample:
        """A training batch: every value gets a leading batch axis ``B``."""
        c = self.config
        items = []
        for _ in range(batch_size or c.batch_size):
            use_real = bool(self._real) and (c.data != DataSource.MIXED or rng.random() < 0.5)
            s = dict(self._draw(rng, use_real))
            if use_real and c.deform_augment and rng.random() < c.deform_augment:
                s = deformed_self_pair(s, rng, c.deform_augment_mm / c.spacing_mm)
            if c.augment:
                for axis in range(c.dims):
                    if rng.random() < 0.5 and axis in self.mirror_axes:
                        s = flip_sample(s, axis)
            if c.crop_shape:
                s = random_crop(s, tuple(c.crop_shape), rng)
            if c.intensity_augment:
                s["moving"] = augment_intensity(s["moving"], rng)
                s["fixed"] = augment_intensity(s["fixed"], rng)
            items.append(s)
        return {k: torch.stack([s[k] for s in items]) for k in items[0]}

    def validation(self) -> Sample:
        """Fixed validation pairs (same every epoch and every run with this config), batched."""
        if self._val is None:
            c = self.config
            if self._real:
                idx = (
                    np.linspace(0, len(self._real) - 1, min(c.val_pairs, len(self._real))).round().astype(int)
                )
                items = [self._real[i] for i in idx]
            else:
                g = np.random.default_rng([c.seed, 10**6])
                items = [shapes_pair(tuple(c.train_shape), g, affine=True) for _ in range(c.val_pairs)]
            self._val = {k: torch.stack([s[k] for s in items]) for k in items[0]}
        return self._val
