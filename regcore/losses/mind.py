"""MIND-SSC: modality independent neighbourhood descriptor, self-similarity context.

Heinrich et al., "Towards realtime multimodal fusion for image-guided interventions using
self-similarity", MICCAI 2013. Each voxel is described by how similar small patches around
pairs of its neighbours are to each other, so the descriptor of a T1 image and of a T2 image of
the same anatomy agree even though their intensities do not.

3D: the six face neighbours at distance ``dilation`` voxels form 12 pairs at squared distance
``2 * dilation^2`` -> 12 channels. 2D analogue: the four edge neighbours form 4 such pairs.
For each pair (a, b): ``D = box_mean((I(x + a) - I(x + b))^2)`` over a ``(2 radius + 1)^n`` patch;
``MIND = exp(-(D - min_pairs D) / V)`` with ``V`` the mean over pairs (clamped to [1e-3, 1e3]
times its image mean). Replicate padding at the borders.

``radius`` and ``dilation`` default to 2 voxels (the paper's); given the grid's spacing, :func:`mind_scale` sets both
to a physical size instead (:data:`MIND_SCALE_MM`), as ``make_similarity(..., spacing=...)`` and demons' and
fireants' descriptors do.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from regcore.losses.similarity import SimilarityLoss, masked_mean

MIND_SCALE_MM = 1.0
"""Physical scale of MIND-SSC descriptors (:func:`mind_scale`). Chosen 2026-12-05 for demons' descriptors on the tune
parts (the stain pairs' tune seeds and the train splits of ``regcore.data.multimodal``), where radius and dilation 2
voxels (the rule until then) against 1: stains TRE 3.27 -> 2.78 px, spine T1w/T2w slices (1 mm) Dice 0.823 -> 0.891,
T1w/T2w sample slices (2 mm) 0.875 -> 0.900; on the 0.4 mm MR/TRUS slices 2 voxels stayed best (1: Dice +0.004, TRE
+0.22 mm; 3 and 4: both worse). 1 mm puts each set on its best radius. Then checked for dense, svf and bspline's
``MINDLoss`` on the same tune parts (a scratch run, 2 voxels -> 1 mm): sample slices Dice 0.850 / 0.856 / 0.896 ->
0.877 / 0.882 / 0.904, spine slices 0.744 / 0.768 / 0.882 -> 0.836 / 0.854 / 0.889, stains TRE 5.24 / 5.18 / 4.72 ->
4.96 / 4.96 / 3.86 px; and for affine's ``similarity="mind"``: sample slices 0.822 -> 0.835, spine slices 0.368 ->
0.795. The held-out results are in benchmarks/README.md."""


def mind_scale(spacing: Sequence[float]) -> int:
    """Patch radius and neighbour distance (voxels) of MIND-SSC descriptors on a grid of ``spacing`` (mm per axis):
    the whole voxels of the finest axis in :data:`MIND_SCALE_MM`, at least 1 (1 mm and coarser: 1; 0.5 mm and
    0.4 mm: 2)."""
    finest = min(float(s) for s in spacing)
    if not finest > 0 or not math.isfinite(finest):
        raise ValueError(f"spacing must be finite and > 0 mm per axis, got {tuple(spacing)}")
    return max(1, math.floor(MIND_SCALE_MM / finest + 1e-3))  # 1e-3: spacings stored as 0.49999999 mm


def describe_scale(spacing: Sequence[float]) -> str:
    """One phrase for the user: how far apart the MIND descriptors' neighbours lie on a grid of ``spacing`` (mm)."""
    voxels = mind_scale(spacing)
    return f"MIND neighbours {voxels} voxel{'s' if voxels > 1 else ''} ({voxels * min(map(float, spacing)):.3g} mm) apart"


def ssc_pairs(ndim: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Neighbour offset pairs of the SSC pattern: 12 in 3D, 4 in 2D (unit offsets, tensor axis order)."""
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    neighbours = []
    for axis in range(ndim):
        for sign in (-1, 1):
            off = [0] * ndim
            off[axis] = sign
            neighbours.append(tuple(off))
    return [
        (a, b)
        for a, b in itertools.combinations(neighbours, 2)
        if sum((x - y) ** 2 for x, y in zip(a, b)) == 2
    ]


def _shift(padded: torch.Tensor, offset: tuple[int, ...], pad: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``I(x + offset)`` for every x, read from an image padded by ``pad`` on every side."""
    index = [slice(None), slice(None)] + [slice(pad + o, pad + o + s) for o, s in zip(offset, shape)]
    return padded[tuple(index)]


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of ``x`` ``(B, C, *S)`` over the ``(2 radius + 1)^n`` box around each voxel, replicate border, as
    ``2 radius + 1`` shifted views added up along one axis after another: elementwise passes that vectorise,
    forward and backward (a 5^3 box took ~4x longer through ``avg_pool3d``)."""
    if radius == 0:
        return x
    ndim = x.ndim - 2
    x = F.pad(x, [radius] * (2 * ndim), mode="replicate")
    for axis in range(2, 2 + ndim):
        size = x.shape[axis] - 2 * radius
        total = x.narrow(axis, 0, size) + x.narrow(axis, 1, size)
        for k in range(2, 2 * radius + 1):
            total.add_(x.narrow(axis, k, size))
        x = total.div_(2 * radius + 1)
    return x


def mind_ssc(image: torch.Tensor, radius: int = 2, dilation: int = 2, eps: float = 1e-12) -> torch.Tensor:
    """MIND-SSC features of ``image`` ``(B, C, *S)``.

    Args:
        image: ``(B, C, *S)`` float image, 2D or 3D.
        radius: patch half-size in voxels (patch ``2 radius + 1`` per axis).
        dilation: distance of the neighbours from the centre voxel, in voxels.
    Returns:
        ``(B, 12 C, *S)`` in 3D or ``(B, 4 C, *S)`` in 2D, values in (0, 1]; differentiable.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim not in (4, 5) or not image.is_floating_point():
        raise ValueError(
            f"image must be a float (B, C, *S) tensor with 2 or 3 spatial dims, "
            f"got shape {tuple(image.shape)} dtype {image.dtype}"
        )
    for arg, v, lo in (("radius", radius, 0), ("dilation", dilation, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{arg} must be an int >= {lo} (voxels), got {v!r}")
    ndim = image.ndim - 2
    b, c = image.shape[:2]
    shape = tuple(image.shape[2:])
    x = image.reshape(b * c, 1, *shape)
    padded = F.pad(x, [dilation] * (2 * ndim), mode="replicate")
    scaled = [
        (tuple(dilation * o for o in pa), tuple(dilation * o for o in pb)) for pa, pb in ssc_pairs(ndim)
    ]
    # Channel by channel into one buffer (patch distance and its box mean), and in place where no autograd graph
    # needs the inputs: the only full-size 12-channel tensor is the result (236 MiB at 1 mm). With the pyramid
    # downsampled channel by channel too, `regcore register --method demons` on the 1 mm T1w -> T2w sample peaks
    # at 1374 MiB instead of 1570 (2026-12-04, median of 4 paired runs).
    lean = not (torch.is_grad_enabled() and image.requires_grad)
    diff = torch.empty((b * c, len(scaled), *shape), dtype=image.dtype, device=image.device)
    for k, (oa, ob) in enumerate(scaled):
        squared = (_shift(padded, oa, dilation, shape) - _shift(padded, ob, dilation, shape)) ** 2
        diff[:, k : k + 1] = _box_mean(squared, radius)
    del padded, squared
    lowest = diff.amin(1, keepdim=True)
    mind = diff.sub_(lowest) if lean else diff - lowest
    var = mind.mean(1, keepdim=True)
    level = var.flatten(1).mean(1).view(-1, *([1] * (ndim + 1))).clamp_min(eps)
    var = torch.maximum(torch.minimum(var, level * 1000.0), level * 0.001)
    mind = mind.div_(var).neg_().exp_() if lean else torch.exp(-mind / var)
    return mind.reshape(b, c * mind.shape[1], *shape)


class MINDLoss(SimilarityLoss):
    """Mean squared difference between MIND-SSC descriptors of fixed and warped (multimodal).

    Args:
        radius: patch half-size in voxels. dilation: neighbour distance in voxels.
    """

    def __init__(self, radius: int = 2, dilation: int = 2):
        super().__init__()
        self.radius, self.dilation = radius, dilation
        self._fixed: tuple[torch.Tensor, int, torch.Tensor] | None = None  # (image, its version, descriptors)

    def _fixed_descriptors(self, fixed: torch.Tensor) -> torch.Tensor:
        """MIND of ``fixed``, computed once while the same unchanged tensor comes back (an optimiser's loop calls
        the loss with one fixed image and a new warped one every iteration: half the work)."""
        if fixed.requires_grad:
            return mind_ssc(fixed, self.radius, self.dilation)
        kept = self._fixed
        if kept is None or kept[0] is not fixed or kept[1] != fixed._version:
            with torch.no_grad():
                kept = (fixed, fixed._version, mind_ssc(fixed, self.radius, self.dilation))
            self._fixed = kept
        return kept[2]

    def _loss(self, fixed, warped, mask):
        diff = (self._fixed_descriptors(fixed) - mind_ssc(warped, self.radius, self.dilation)) ** 2
        return masked_mean(diff, mask)
