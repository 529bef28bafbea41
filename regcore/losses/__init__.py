"""Losses: image similarities, displacement regularisers and the soft Dice, chosen by name.

    >>> from regcore.losses import make_similarity, make_regularizer, soft_dice_loss
    >>> sim = make_similarity("lncc", dims=2)          # loss(fixed, warped, mask=None) -> scalar
    >>> reg = make_regularizer("diffusion")            # reg(u) -> scalar, u (B, ndim, *S) voxels
    >>> loss = sim(fixed, warped) + 1.0 * reg(u)       # lower = better aligned and smoother
    >>> seg = soft_dice_loss(fixed_onehot, warped_onehot)   # 1 - mean soft Dice, (B, L, *S) inputs

All similarity losses take ``(B, C, *S)`` images (2D or 3D) and return a scalar where lower
means better alignment (see ``similarity.py`` for each sign convention). The name -> loss map
lives in ``factory.py``; the Dice formula shared with ``regcore.metrics`` in ``dice.py``.
"""

from __future__ import annotations

from regcore.losses.dice import SoftDiceLoss, dice_from_counts, one_hot, soft_dice, soft_dice_loss
from regcore.losses.factory import (
    LNCC_WINDOW,
    MULTIMODAL,
    WINDOWED,
    Regularizer,
    Similarity,
    SimilarityName,
    make_regularizer,
    make_similarity,
    regularizer_loss,
)
from regcore.losses.mind import MINDLoss, mind_ssc
from regcore.losses.regularizers import (
    BendingEnergyRegularizer,
    DiffusionRegularizer,
    FoldingPenalty,
    NoRegularizer,
    TotalVariationRegularizer,
    inverse_consistency,
    inverse_consistency_residual,
)
from regcore.losses.similarity import (
    CorrelationRatioLoss,
    LocalNCCLoss,
    MAELoss,
    MSELoss,
    MutualInformationLoss,
    NCCLoss,
    NMILoss,
    SimilarityLoss,
    SSIMLoss,
    ssim_map,
)

__all__ = [
    "Similarity",
    "SimilarityName",
    "Regularizer",
    "MULTIMODAL",
    "WINDOWED",
    "LNCC_WINDOW",
    "make_similarity",
    "make_regularizer",
    "regularizer_loss",
    "soft_dice",
    "soft_dice_loss",
    "SoftDiceLoss",
    "dice_from_counts",
    "one_hot",
    "SimilarityLoss",
    "MSELoss",
    "MAELoss",
    "NCCLoss",
    "LocalNCCLoss",
    "MutualInformationLoss",
    "NMILoss",
    "CorrelationRatioLoss",
    "SSIMLoss",
    "MINDLoss",
    "mind_ssc",
    "ssim_map",
    "DiffusionRegularizer",
    "TotalVariationRegularizer",
    "BendingEnergyRegularizer",
    "FoldingPenalty",
    "NoRegularizer",
    "inverse_consistency",
    "inverse_consistency_residual",
]
