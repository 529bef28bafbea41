"""What the demons force compares: intensities, or MIND-SSC descriptors when the contrasts differ.

Demons' force ``(F - W) J / (|J|^2 + (F - W)^2 / K)`` assumes that aligned images have equal intensities.
Between contrasts that are not related that way (MR and ultrasound, T1w and T2w) it pulls edges onto the
wrong edges. MIND demons (Reaungamornrat et al., "MIND Demons: symmetric diffeomorphic deformable
registration of MR and CT for image-guided spine surgery", IEEE TMI 2016) runs the same force on MIND-SSC
descriptors (Heinrich et al. 2013, :mod:`regcore.losses.mind`): each voxel becomes 12 channels (4 in 2D)
that describe its local self-similarity, which is the same in both contrasts; the force sums over channels.

``features="auto"`` keeps intensities only when the images are clearly of one contrast
(:func:`regcore.methods.classical.contrast.contrast_correlation` at least 0.4; the measurements behind that value
are in :mod:`regcore.methods.classical.contrast`).

The descriptor's scale is physical (:func:`regcore.losses.mind.mind_scale`): patch radius and neighbour distance
are the whole voxels in 1 mm of the finest axis, at least one. On a thick-slice grid (an axis more than
:data:`THICK_RATIO` times the finest spacing) the descriptor's neighbours would lie whole slices apart: MIND is then
computed in-plane, slice by slice (the 2D pattern).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch

from regcore.losses.mind import mind_scale, mind_ssc
from regcore.methods.classical.contrast import contrast_correlation, contrast_reason, contrasts_differ

THICK_RATIO = 3.0
"""An axis whose spacing exceeds this many times the finest one gets no MIND neighbours (in-plane MIND)."""


class DemonsFeatures(enum.StrEnum):
    AUTO = "auto"
    INTENSITY = "intensity"
    MIND = "mind"


def choose_features(
    features: str, fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]
) -> DemonsFeatures:
    """``features`` itself, or for ``auto`` :func:`features_for` the pair's contrast correlation."""
    chosen = DemonsFeatures(features)
    if chosen != DemonsFeatures.AUTO:
        return chosen
    return features_for(contrast_correlation(fixed, moving, spacing))


def features_for(correlation: float) -> DemonsFeatures:
    """What ``features="auto"`` compares for images whose contrast correlation is ``correlation``."""
    return DemonsFeatures.MIND if contrasts_differ(correlation) else DemonsFeatures.INTENSITY


def describe_choice(correlation: float) -> str:
    """One phrase for the user: what ``auto`` compares on a pair of this ``correlation``, and why."""
    chosen = "MIND descriptors" if contrasts_differ(correlation) else "intensities"
    return f"{chosen}, because {contrast_reason(correlation)}"


def mind_features(image: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """MIND-SSC descriptors ``(1, 12, *S)`` (3D) or ``(1, 4, *S)`` (2D, and 3D with a thick axis: in-plane
    per slice) of a one-channel ``image`` ``(1, 1, *S)`` scaled to [0, 1]; radius and dilation
    :func:`regcore.losses.mind.mind_scale` voxels."""
    ndim = image.ndim - 2
    finest = min(float(s) for s in spacing)
    scale = mind_scale(spacing)
    thick = [axis for axis, s in enumerate(spacing) if float(s) > THICK_RATIO * finest]
    if ndim != 3 or not thick:
        return mind_ssc(image, radius=scale, dilation=scale)
    axis = 2 + max(thick, key=lambda a: float(spacing[a]))  # the slice axis
    planes = image.movedim(axis, 1)  # (1, slices, 1, H, W): the slices become a batch of 2D images
    b, n = planes.shape[:2]
    described = mind_ssc(
        planes.reshape(b * n, *planes.shape[2:]), radius=scale, dilation=scale
    )  # (slices, 4, H, W)
    described = described.reshape(b, n, *described.shape[1:]).movedim(1, 2)  # (1, 4, slices, H, W)
    return described.movedim(2, axis).contiguous()
