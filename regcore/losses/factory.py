"""The ONE name -> loss map of regcore: similarities and regularisers by name.

Every user of a loss chosen by name (classical methods, labs, training) builds it here:

    >>> sim = make_similarity("lncc", dims=3)              # box LNCC, 7^3 window (9^2 in 2D)
    >>> sim = make_similarity(Similarity.MI, dims=2, bins=48)
    >>> reg = make_regularizer("diffusion")
    >>> loss = sim(fixed, warped) + 1.0 * reg(u)            # (B, C, *S) images, u (B, ndim, *S) voxels

Similarities are callable as ``loss(fixed, warped, mask=None) -> scalar``, lower = better aligned
(sign conventions in :mod:`regcore.losses.similarity`); regularisers as ``reg(u) -> scalar``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from torch import nn

from regcore.losses import regularizers as reg
from regcore.losses import similarity as sim
from regcore.losses.mind import MINDLoss, mind_scale


class Similarity(enum.StrEnum):
    """Similarity names; ``MI``, ``NMI``, ``CR`` and ``MIND`` also work across modalities."""

    MSE = "mse"
    MAE = "mae"
    NCC = "ncc"
    LNCC = "lncc"
    LNCC_GAUSS = "lncc_gauss"
    MI = "mi"
    NMI = "nmi"
    CR = "cr"
    MIND = "mind"
    SSIM = "ssim"


SimilarityName = Similarity
"""Alias of :class:`Similarity`."""


class Regularizer(enum.StrEnum):
    """Displacement penalty names."""

    DIFFUSION = "diffusion"
    TV = "tv"
    BENDING = "bending"
    FOLDING = "folding"
    NONE = "none"


MULTIMODAL = frozenset({Similarity.MI, Similarity.NMI, Similarity.CR, Similarity.MIND})
"""Similarities that do not assume the same intensity mapping in both images."""

HISTOGRAM = frozenset({Similarity.MI, Similarity.NMI, Similarity.CR})
"""Similarities computed from a (Parzen) joint histogram: they accept ``samples`` (voxels drawn per call)."""

WINDOWED = frozenset({Similarity.LNCC, Similarity.LNCC_GAUSS, Similarity.SSIM})
"""Similarities with a local window (the ``window`` argument of :func:`make_similarity`)."""

LNCC_WINDOW = {2: 9, 3: 7}
"""Default LNCC window (voxels) per number of spatial dims (voxelmorph's 9^n in 2D, 7^3 in 3D)."""

MI_SAMPLES_3D = 200_000
"""Voxels sampled per call by MI/NMI in 3D (bounds memory; the seeded generator keeps runs repeatable)."""

_SIMILARITIES: dict[Similarity, Callable[..., sim.SimilarityLoss]] = {
    Similarity.MSE: sim.MSELoss,
    Similarity.MAE: sim.MAELoss,
    Similarity.NCC: sim.NCCLoss,
    Similarity.LNCC: lambda **kw: sim.LocalNCCLoss(kernel="box", **kw),
    Similarity.LNCC_GAUSS: lambda **kw: sim.LocalNCCLoss(kernel="gaussian", **kw),
    Similarity.MI: sim.MutualInformationLoss,
    Similarity.NMI: sim.NMILoss,
    Similarity.CR: sim.CorrelationRatioLoss,
    Similarity.MIND: MINDLoss,
    Similarity.SSIM: sim.SSIMLoss,
}

_REGULARIZERS = {
    Regularizer.DIFFUSION: reg.DiffusionRegularizer,
    Regularizer.TV: reg.TotalVariationRegularizer,
    Regularizer.BENDING: reg.BendingEnergyRegularizer,
    Regularizer.FOLDING: reg.FoldingPenalty,
    Regularizer.NONE: reg.NoRegularizer,
}


def _lookup(enum_cls, name, arg):
    try:
        return enum_cls(str(name).lower())
    except ValueError:
        raise ValueError(f"{arg} must be one of {[e.value for e in enum_cls]}, got {name!r}") from None


def _defaults(key: Similarity, dims: int, spacing: Sequence[float] | None) -> dict:
    if key == Similarity.MIND and spacing is not None:
        scale = mind_scale(spacing)
        return {"radius": scale, "dilation": scale}
    if key in (Similarity.LNCC, Similarity.LNCC_GAUSS):
        return {"window": LNCC_WINDOW[dims]}
    if key in (Similarity.MI, Similarity.NMI):
        return {"bins": 32, "samples": MI_SAMPLES_3D if dims == 3 else None, "seed": 0}
    return {}


def make_similarity(
    name: str | Similarity,
    dims: int,
    *,
    window: int | None = None,
    spacing: Sequence[float] | None = None,
    **options,
) -> sim.SimilarityLoss:
    """Similarity loss ``name`` for ``dims``-D images (2 or 3).

    Args:
        name: a :class:`Similarity` value (case-insensitive string accepted).
        dims: number of spatial dims of the images it will see; sets the defaults: LNCC window 9 (2D) or
            7 (3D) voxels; MI/NMI 32 bins, 200k sampled voxels per call in 3D with a seeded generator.
        window: odd local window in voxels for lncc, lncc_gauss and ssim (SSIM default 11); accepted and
            ignored by the other similarities, so one config field serves every choice.
        spacing: mm per spatial axis of the images it will see; sets MIND's radius and dilation to a physical size
            (:func:`regcore.losses.mind.mind_scale`). Without it MIND keeps its 2 voxels; ignored by the others.
        options: further keyword arguments of the loss class (e.g. ``bins=48``, ``sigma=2.0``,
            ``radius=1``); they override the defaults. Unknown keywords raise TypeError.
    Returns:
        A module callable as ``loss(fixed, warped, mask=None) -> scalar`` (lower = better) on
        ``(B, C, *S)`` images.
    """
    key = _lookup(Similarity, name, "name")
    if isinstance(dims, bool) or dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3 (spatial dims of the images), got {dims!r}")
    kwargs = {**_defaults(key, dims, spacing), **options}
    if window is not None and key in WINDOWED:
        kwargs["window"] = window
    try:
        return _SIMILARITIES[key](**kwargs)
    except TypeError as e:
        raise TypeError(f"similarity {key.value!r}: bad keyword arguments {sorted(options)}: {e}") from None


def make_regularizer(name: str | Regularizer, **options) -> nn.Module:
    """Regulariser ``name``, callable as ``reg(u) -> scalar`` with ``u`` ``(B, ndim, *S)`` voxels (fixed ->
    moving); ``options`` go to its class (e.g. ``scheme="central"`` for diffusion)."""
    key = _lookup(Regularizer, name, "name")
    try:
        return _REGULARIZERS[key](**options)
    except TypeError as e:
        raise TypeError(f"regularizer {key.value!r}: bad keyword arguments {sorted(options)}: {e}") from None


regularizer_loss = make_regularizer
"""Alias of :func:`make_regularizer` (older name)."""
