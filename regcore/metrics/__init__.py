"""Evaluation metrics: label overlap, landmark TRE, deformation plausibility, intensity agreement.

    >>> from regcore.metrics import evaluate, evaluate_identity
    >>> row = evaluate(result, fixed_labels=fl, moving_labels=ml, fixed_landmarks=fp, moving_landmarks=mp)
    >>> row["dice_mean"], row["hd95_mean_mm"], row["tre_mean_mm"], row["folding_percent"]

Distances are in mm (via the fixed grid's spacing); outputs are plain Python types.
"""

from regcore.metrics.deformation import (
    deformation_metrics,
    folding_percent,
    inverse_consistency_error,
    jacobian_determinant_map,
    ndv_percent,
    non_diffeomorphic_volume,
    sdlogj,
)
from regcore.metrics.evaluate import evaluate, evaluate_identity
from regcore.metrics.intensity import intensity_metrics, mse, ncc, rmse, ssd, ssim
from regcore.metrics.landmarks import landmark_stats, target_registration_error
from regcore.metrics.overlap import dice_per_label, label_overlap, mean_dice, surface_distances

__all__ = [
    "evaluate",
    "evaluate_identity",
    "label_overlap",
    "dice_per_label",
    "mean_dice",
    "surface_distances",
    "target_registration_error",
    "landmark_stats",
    "folding_percent",
    "sdlogj",
    "ndv_percent",
    "non_diffeomorphic_volume",
    "inverse_consistency_error",
    "jacobian_determinant_map",
    "deformation_metrics",
    "intensity_metrics",
    "mse",
    "rmse",
    "ssd",
    "ncc",
    "ssim",
]
