"""Similarity losses and regularisers, chosen by name.

    >>> from regcore.losses import similarity_loss, regularizer_loss
    >>> sim = similarity_loss("lncc", window=9)      # loss(fixed, warped, mask=None) -> scalar
    >>> reg = regularizer_loss("diffusion")          # reg(u) -> scalar, u (B, ndim, *S) voxels
    >>> loss = sim(fixed, warped) + 1.0 * reg(u)     # lower = better aligned and smoother

All similarity losses take ``(B, C, *S)`` images (2D or 3D) and return a scalar where lower
means better alignment (see ``similarity.py`` for each sign convention).
"""

from __future__ import annotations

import enum

from torch import nn

from regcore.losses.mind import MINDLoss, mind_ssc
from regcore.losses.regularizers import (
    BendingEnergyRegularizer,
    DiffusionRegularizer,
    FoldingPenalty,
    NoRegularizer,
    TotalVariationRegularizer,
    inverse_consistency,
    inverse_consistency_residual,
    jacobian_determinant,
)
from regcore.losses.similarity import (
    CorrelationRatioLoss,
    LocalNCCLoss,
    MAELoss,
    MSELoss,
    MutualInformationLoss,
    NCCLoss,
    NMILoss,
    SSIMLoss,
    ssim_map,
)


class Similarity(enum.StrEnum):
    """Similarity measures; ``MI``, ``NMI``, ``CR`` and ``MIND`` also work across modalities."""

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


class Regularizer(enum.StrEnum):
    """Displacement penalties."""

    DIFFUSION = "diffusion"
    TV = "tv"
    BENDING = "bending"
    FOLDING = "folding"
    NONE = "none"


MULTIMODAL = frozenset({Similarity.MI, Similarity.NMI, Similarity.CR, Similarity.MIND})
"""Similarities that do not assume the same intensity mapping in both images."""

_SIMILARITY_FACTORIES = {
    Similarity.MSE: MSELoss,
    Similarity.MAE: MAELoss,
    Similarity.NCC: NCCLoss,
    Similarity.LNCC: lambda **kw: LocalNCCLoss(kernel="box", **kw),
    Similarity.LNCC_GAUSS: lambda **kw: LocalNCCLoss(kernel="gaussian", **kw),
    Similarity.MI: MutualInformationLoss,
    Similarity.NMI: NMILoss,
    Similarity.CR: CorrelationRatioLoss,
    Similarity.MIND: MINDLoss,
    Similarity.SSIM: SSIMLoss,
}

_REGULARIZER_FACTORIES = {
    Regularizer.DIFFUSION: DiffusionRegularizer,
    Regularizer.TV: TotalVariationRegularizer,
    Regularizer.BENDING: BendingEnergyRegularizer,
    Regularizer.FOLDING: FoldingPenalty,
    Regularizer.NONE: NoRegularizer,
}


def _lookup(enum_cls, name, arg):
    try:
        return enum_cls(str(name).lower())
    except ValueError:
        raise ValueError(f"{arg} must be one of {[e.value for e in enum_cls]}, got {name!r}") from None


def similarity_loss(name: str | Similarity, **kwargs) -> nn.Module:
    """Build a similarity loss by name; ``kwargs`` go to its class (e.g. ``window=9``, ``bins=32``).

    Returns a module callable as ``loss(fixed, warped, mask=None) -> scalar`` (lower = better).
    """
    key = _lookup(Similarity, name, "name")
    try:
        return _SIMILARITY_FACTORIES[key](**kwargs)
    except TypeError as e:
        raise TypeError(f"similarity {key.value!r}: bad keyword arguments {sorted(kwargs)}: {e}") from None


def regularizer_loss(name: str | Regularizer, **kwargs) -> nn.Module:
    """Build a regulariser by name; callable as ``reg(u) -> scalar`` with ``u`` ``(B, ndim, *S)`` voxels."""
    key = _lookup(Regularizer, name, "name")
    try:
        return _REGULARIZER_FACTORIES[key](**kwargs)
    except TypeError as e:
        raise TypeError(f"regularizer {key.value!r}: bad keyword arguments {sorted(kwargs)}: {e}") from None


__all__ = [
    "Similarity", "Regularizer", "MULTIMODAL", "similarity_loss", "regularizer_loss",
    "MSELoss", "MAELoss", "NCCLoss", "LocalNCCLoss", "MutualInformationLoss", "NMILoss",
    "CorrelationRatioLoss", "SSIMLoss", "MINDLoss", "mind_ssc", "ssim_map",
    "DiffusionRegularizer", "TotalVariationRegularizer", "BendingEnergyRegularizer",
    "FoldingPenalty", "NoRegularizer", "inverse_consistency", "inverse_consistency_residual",
    "jacobian_determinant",
]
