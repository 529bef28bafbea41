"""The one entry point: ``estimate_uncertainty(pair, estimator=...)`` -> :class:`UncertaintyResult`.

Estimators (:class:`Estimator`): ``tta`` (test-time augmentation of one method), ``ensemble`` (several
methods and regularisation weights), ``sampling`` (a probabilistic network's samples). Each gives a
member stack ``(K, 1, n, *S)`` of displacements (voxels of the fixed grid, fixed -> moving); from it
come the mean field, the per-voxel variance (mm^2), the label-probability and label-entropy maps
(when the pair has moving labels) and, when the pair has a true displacement, the calibration.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from regcore.image import Geometry, Image
from regcore.uncertainty.calibration import Calibration, calibrate, foreground_mask
from regcore.uncertainty.ensemble import ensemble_members, ensemble_samples
from regcore.uncertainty.fields import error_mm, field_statistics
from regcore.uncertainty.labels import label_entropy, label_probabilities
from regcore.uncertainty.members import Member, ProgressFn, on_fixed_grid, say
from regcore.uncertainty.sampling import sampling_samples
from regcore.uncertainty.tta import Augmentation, default_augmentations, tta_samples


class Estimator(enum.StrEnum):
    TTA = "tta"
    ENSEMBLE = "ensemble"
    SAMPLING = "sampling"


ESTIMATOR_HELP = {
    Estimator.TTA: "test-time augmentation: one method on flipped / gamma-changed / noisy copies of the pair",
    Estimator.ENSEMBLE: "ensemble: several methods and regularisation weights on the same pair",
    Estimator.SAMPLING: "sampling: a probabilistic network's sampled fields (needs a prob_voxelmorph checkpoint)",
}


@dataclass
class UncertaintyResult:
    """An uncertainty estimate on the fixed grid.

    Attributes:
        estimator, method: how it was made (method: the registry method, or the ensemble's methods).
        members: a label per member (augmentation, ensemble member or sample).
        fixed: the fixed Image (its geometry is the grid of every map).
        mean_displacement: ``(1, n, *S)`` voxels, fixed -> moving: the mean of the members.
        variance_mm2: ``(*S)`` per-voxel displacement variance (trace of the covariance, mm^2).
        label_values: label values of ``label_probability`` (0 first), or None without moving labels.
        label_probability: ``(L, *S)`` fraction of members putting each label at each voxel, or None.
        label_entropy_bits: ``(*S)`` entropy of ``label_probability`` (bits), or None.
        error_mm: ``(*S)`` actual error ``|mean - u_true|`` (mm) when the truth is known, else None.
        mask: ``(*S)`` foreground used for calibration (labels, else intensity), or None.
        calibration: :class:`Calibration` when the truth is known, else None.
        runtime_s: wall time of the whole estimate (s).
        samples: the member stack ``(K, 1, n, *S)`` (voxels).
    """

    estimator: str
    method: str
    members: list[str]
    fixed: Image
    mean_displacement: torch.Tensor
    variance_mm2: torch.Tensor
    samples: torch.Tensor
    runtime_s: float
    label_values: list[int] | None = None
    label_probability: torch.Tensor | None = None
    label_entropy_bits: torch.Tensor | None = None
    error_mm: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    calibration: Calibration | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def geometry(self) -> Geometry:
        return self.fixed.geometry

    @property
    def std_mm(self) -> torch.Tensor:
        """``(*S)`` per-voxel predicted standard deviation (mm)."""
        return self.variance_mm2.clamp_min(0).sqrt()

    def summary(self) -> dict:
        """JSON-friendly numbers: estimator, members, runtime, variance/std/entropy statistics, calibration."""
        std = self.std_mm
        region = self.mask if self.mask is not None else torch.ones_like(std, dtype=torch.bool)
        out: dict[str, Any] = {
            "estimator": self.estimator,
            "method": self.method,
            "members": list(self.members),
            "n_members": len(self.members),
            "runtime_s": round(self.runtime_s, 3),
            "shape": list(self.fixed.shape),
            "spacing_mm": [float(s) for s in self.fixed.spacing],
            "variance_mm2_mean": float(self.variance_mm2.mean()),
            "variance_mm2_max": float(self.variance_mm2.max()),
            "std_mm_mean_foreground": float(std[region].mean()),
            **self.meta,
        }
        if self.label_entropy_bits is not None:
            out["label_entropy_bits_mean_foreground"] = float(self.label_entropy_bits[region].mean())
        if self.calibration is not None:
            c = self.calibration
            out.update(
                spearman=c.spearman,
                spearman_p=c.p_value,
                calibration_voxels=c.voxels,
                mean_error_mm=c.mean_error_mm,
                reliability=[b.__dict__ for b in c.bins],
            )
        return out


def _member_stack(
    estimator: Estimator,
    fixed: Image,
    moving: Image,
    *,
    method: str,
    methods: Sequence[str] | None,
    overrides: Mapping[str, Any],
    count: int,
    checkpoint: str,
    device: str,
    seed: int,
    augmentations: Sequence[Augmentation] | None,
    progress: ProgressFn | None,
) -> tuple[torch.Tensor, list[str], str]:
    if estimator is Estimator.TTA:
        augs = list(augmentations) if augmentations else default_augmentations(fixed.ndim, count, seed=seed)
        stack = tta_samples(
            fixed, moving, Member(method, dict(overrides)), augs, device=device, progress=progress
        )
        return stack, [a.label for a in augs], method
    if estimator is Estimator.ENSEMBLE:
        names = list(methods) if methods else [method]
        members = [
            Member(m.method, {**overrides, **m.overrides}) if m.method == method else m
            for m in ensemble_members(names, weights_per_method=max(1, count // len(names)) if count else 3)
        ]
        stack = ensemble_samples(fixed, moving, members, device=device, progress=progress)
        return stack, [m.label for m in members], "+".join(names)
    stack = sampling_samples(
        fixed, moving, checkpoint=checkpoint, samples=count, device=device, seed=seed, progress=progress
    )
    return stack, [f"sample {k + 1}" for k in range(stack.shape[0])], "prob_voxelmorph"


def estimate_uncertainty(
    pair,
    estimator: str | Estimator = Estimator.TTA,
    *,
    method: str = "demons",
    methods: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    members: int = 6,
    checkpoint: str = "",
    augmentations: Sequence[Augmentation] | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> UncertaintyResult:
    """Estimate the registration uncertainty of ``pair`` (a :class:`regcore.data.Pair`).

    Args:
        estimator: ``"tta"``, ``"ensemble"`` or ``"sampling"``.
        method: registry method of TTA (and the method whose ``overrides`` apply in an ensemble).
        methods: ensemble methods (default ``[method]``), each with its regularisation weights.
        overrides: config values of ``method``.
        members: TTA augmentations, sampling draws, or ensemble members in total (split over methods).
        checkpoint: prob_voxelmorph weights (sampling).
        augmentations: explicit TTA augmentations (default :func:`default_augmentations`).
        progress: ``progress(fraction, message)``.
    """
    t0 = time.perf_counter()
    for attr in ("fixed", "moving"):
        if not isinstance(getattr(pair, attr, None), Image):
            raise TypeError(f"pair must be a regcore.data.Pair with Images, got {type(pair).__name__}")
    try:
        kind = Estimator(estimator)
    except ValueError:
        raise ValueError(
            f"estimator must be one of {', '.join(e.value for e in Estimator)}, got {estimator!r}"
        ) from None
    if not isinstance(members, int) or members < 2:
        raise ValueError(f"members must be an integer >= 2, got {members!r}")
    fixed = pair.fixed
    moving = on_fixed_grid(fixed, pair.moving)
    stack, labels, described = _member_stack(
        kind,
        fixed,
        moving,
        method=method,
        methods=methods,
        overrides=dict(overrides or {}),
        count=members,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        augmentations=augmentations,
        progress=progress,
    )
    mean, variance = field_statistics(stack, fixed.spacing)
    result = UncertaintyResult(kind.value, described, labels, fixed, mean, variance, stack, 0.0)
    moving_labels = on_fixed_grid(fixed, getattr(pair, "moving_labels", None))
    if moving_labels is not None:
        say(progress, 1.0, "propagating to labels")
        values, probs = label_probabilities(moving_labels.data, stack)
        result.label_values, result.label_probability = values, probs
        result.label_entropy_bits = label_entropy(probs)
    fixed_labels = on_fixed_grid(fixed, getattr(pair, "fixed_labels", None))
    result.mask = foreground_mask(
        fixed.data.cpu(), fixed_labels.data.cpu() if fixed_labels is not None else None
    )
    truth = getattr(pair, "true_displacement", None)
    if truth is not None:
        result.error_mm = error_mm(mean, truth.cpu(), fixed.spacing)
        result.calibration = calibrate(result.std_mm, result.error_mm, result.mask)
    result.runtime_s = time.perf_counter() - t0
    return result
