"""Live lambda sweep of a HyperMorph run: load the network once, re-predict for any lambda in milliseconds.

HyperMorph (:mod:`regcore.methods.learned.hypermorph`) takes its regularisation weight lambda in [0, 1] as an
input, so one trained network covers the whole accuracy-smoothness trade-off. :class:`HyperSweep` keeps the
network, the model-grid inputs and the label maps of one pair in memory; :meth:`HyperSweep.at` re-predicts
for one lambda and scores it, :meth:`HyperSweep.curve` does so over a lambda grid:

    >>> sweep = HyperSweep.from_record(record)        # or HyperSweep.from_pair(pair)
    >>> point = sweep.at(0.7)                         # SweepPoint: field, warped, Dice, folding, timings
    >>> curve = sweep.curve()                         # SweepCurve over 11 lambdas 0, 0.1, ..., 1

Conventions: ``displacement`` is ``(1, ndim, *S)`` in voxels of the FIXED grid, fixed -> moving
(``warped = moving o (id + u)``), exactly what :meth:`LearnedMethod.register` returns (network only: a run's
instance optimisation, ``refine_iterations``, and an ``initial`` affine stage are not redone). Dice is the
mean over the structures present in both label maps (:mod:`regcore.metrics.presence`, as the app shows it);
folding and SDlogJ are :func:`regcore.metrics.deformation.deformation_metrics` (as the run's metrics).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regcore.image import Image
from regcore.metrics.deformation import deformation_metrics, jacobian_determinant_map
from regcore.metrics.overlap import dice_per_label, label_name
from regcore.metrics.presence import labels_in_both, mean_over_present
from regcore.nets.inputs import field_to_image_grid
from regcore.spatial.warp import warp, warp_labels

__all__ = ["FAMILY", "HyperSweep", "SweepCurve", "SweepPoint", "default_lambdas"]

FAMILY = "hypermorph"
"""The registry name of the family a sweep runs."""


def default_lambdas(n: int = 11) -> list[float]:
    """``n`` evenly spaced lambdas from 0 to 1 (``n >= 2``), rounded to 6 decimals."""
    if int(n) < 2:
        raise ValueError(f"n (number of lambdas) must be >= 2, got {n!r}")
    return [round(float(x), 6) for x in np.linspace(0.0, 1.0, int(n))]


def _check_lambda(lam: Any) -> float:
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lambda must be a number in [0, 1], got {lam!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {value}")
    return value


@dataclass(frozen=True, eq=False)
class SweepPoint:
    """One lambda's registration.

    Attributes:
        lam: the regularisation weight in [0, 1].
        displacement: ``(1, ndim, *S)`` float32 CPU tensor, fixed-grid voxels, fixed -> moving.
        warped: ``(*S)`` moving intensities warped onto the fixed grid.
        warped_labels: ``(*S)`` moving labels warped (nearest neighbour), or None without labels.
        jacobian: ``(*S)`` det J of ``id + displacement`` (<= 0 marks folding).
        dice_mean: mean Dice over the structures present in both label maps (None without labels).
        dice: structure name -> Dice for those structures.
        folding_percent, sdlogj, ndv_percent: :func:`~regcore.metrics.deformation.deformation_metrics`.
        predict_s: seconds for the network and the resampling of its field to the fixed grid.
        total_s: seconds for the whole point (prediction, warps and metrics).
    """

    lam: float
    displacement: torch.Tensor
    warped: np.ndarray
    warped_labels: np.ndarray | None
    jacobian: np.ndarray
    dice_mean: float | None
    dice: dict[str, float]
    folding_percent: float
    sdlogj: float
    ndv_percent: float
    predict_s: float
    total_s: float


@dataclass(frozen=True)
class SweepCurve:
    """Scores per lambda (lists of equal length, in the order of ``lambdas``); ``dice_mean`` holds None
    without labels. ``seconds``: total time of each point."""

    lambdas: list[float]
    dice_mean: list[float | None]
    folding_percent: list[float]
    sdlogj: list[float]
    seconds: list[float]


class HyperSweep:
    """HyperMorph's network and one pair's inputs, kept for repeated predictions at any lambda.

    Args:
        fixed: the fixed intensity Image.
        moving: the moving intensity Image on the fixed grid (resample it first, as a run's ``result.moving``).
        fixed_labels, moving_labels: label maps on the fixed grid (both or neither).
        label_names: label value -> structure name (keys of ``SweepPoint.dice``).
        settings: the run's :class:`~regcore.methods.learned.hypermorph.HyperMorphSettings` (checkpoint,
            device); None = defaults (the shipped weights for the image's dimensionality).
        threads: CPU intra-op threads while re-predicting (torch's setting is restored after each call);
            None = 1 for 2D images, torch's current setting for 3D. A 2D slice is too small to gain from
            threads, and on a busy machine OpenMP threads waiting for each other cost more than the work
            (measured on the 2D sample: 25 ms with 1 thread, 0.5 s with 2 threads under load 3.6 on 2 cores).
    """

    def __init__(
        self,
        fixed: Image,
        moving: Image,
        fixed_labels: Image | None = None,
        moving_labels: Image | None = None,
        label_names: Mapping[int, str] | None = None,
        settings: Any = None,
        threads: int | None = None,
    ) -> None:
        from regcore.methods.base import resolve_device
        from regcore.methods.learned.inference import check_same_grid
        from regcore.methods.registry import get

        check_same_grid(fixed, moving)
        if (fixed_labels is None) != (moving_labels is None):
            raise ValueError("fixed_labels and moving_labels: give both label maps or neither")
        for arg, lab in (("fixed_labels", fixed_labels), ("moving_labels", moving_labels)):
            if lab is not None and tuple(lab.shape) != tuple(fixed.shape):
                raise ValueError(f"{arg} shape {tuple(lab.shape)} must equal the fixed grid {fixed.shape}")
        spec = get(FAMILY)
        if settings is None:
            settings = spec.make_config({})
        if not isinstance(settings, spec.config_cls):
            raise ValueError(
                f"settings must be {spec.config_cls.__name__} (a {FAMILY} run's config), "
                f"got {type(settings).__name__}"
            )
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
        self.threads = int(threads) if threads is not None else (1 if fixed.ndim == 2 else None)
        self.method = spec.factory()  # LearnedMethod
        self.settings: Any = settings
        self.device = resolve_device(getattr(settings, "device", "auto"))
        self.nets, self.fam_config, self.data = self.method.networks(settings, fixed.ndim, self.device)
        self.nets.eval()
        self.fixed = fixed
        self.moving_batch = moving.batch().to(self.device)
        self.grid, self.fix_in, self.mov_in = self.method.model_inputs(
            fixed, moving, self.fam_config, self.data, self.device
        )
        self.label_names = dict(label_names or {})
        self.fixed_labels = None if fixed_labels is None else fixed_labels.numpy()
        self.moving_labels = None if moving_labels is None else moving_labels.data[None].to(self.device)
        self.presence = (
            None if fixed_labels is None else labels_in_both(fixed_labels, moving_labels, self.label_names)
        )
        self._codes = (
            None
            if self.presence is None
            else [
                v
                for v in fixed_labels.present_labels()
                if v != 0 and label_name(v, self.label_names) in self.presence.both
            ]
        )

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_record(cls, record) -> HyperSweep:
        """The sweep of a :class:`~regcore.run_record.RunRecord` of method ``hypermorph`` (its fixed image,
        moving image on the fixed grid, label maps and settings; a run folder's record uses the defaults)."""
        if getattr(record, "method", None) != FAMILY:
            raise ValueError(f"record.method must be {FAMILY!r}, got {getattr(record, 'method', None)!r}")
        r = record.result
        settings = r.config if hasattr(r.config, "regularization") else None
        has_labels = record.fixed_labels is not None and record.moving_labels is not None
        return cls(
            r.fixed,
            r.moving,
            record.fixed_labels if has_labels else None,
            record.moving_labels if has_labels else None,
            record.label_names or None,
            settings,
        )

    @classmethod
    def from_pair(cls, pair, settings: Any = None) -> HyperSweep:
        """The sweep of a :class:`~regcore.data.Pair` (moving image and labels resampled onto the fixed grid)."""
        from regcore.register import prepare_moving

        for attr in ("fixed", "moving"):
            if not isinstance(getattr(pair, attr, None), Image):
                raise ValueError(f"pair.{attr} must be a regcore Image (give a regcore.data.Pair)")
        has_labels = pair.fixed_labels is not None and pair.moving_labels is not None
        return cls(
            pair.fixed,
            prepare_moving(pair.fixed, pair.moving),
            prepare_moving(pair.fixed, pair.fixed_labels) if has_labels else None,
            prepare_moving(pair.fixed, pair.moving_labels) if has_labels else None,
            pair.label_names,
            settings,
        )

    # -- predictions -----------------------------------------------------------------------------
    @property
    def run_lambda(self) -> float:
        """The lambda the settings hold (the run's own)."""
        return float(self.settings.regularization)

    def displacement(self, lam: float) -> torch.Tensor:
        """The network's field for ``lam`` on the fixed grid, ``(1, ndim, *S)`` on the sweep's device."""
        settings = dataclasses.replace(self.settings, regularization=_check_lambda(lam))
        fam = self.method.family
        with nullcontext() if getattr(fam, "predict_needs_grad", False) else torch.no_grad():
            pred = fam.predict(self.nets, self.mov_in, self.fix_in, self.fam_config, settings)
            return field_to_image_grid(pred.displacement.detach().float(), self.grid)

    def at(self, lam: float) -> SweepPoint:
        """Predict, warp and score one lambda (see :class:`SweepPoint`)."""
        lam = _check_lambda(lam)
        old = torch.get_num_threads()
        if self.device.type == "cpu" and self.threads is not None and self.threads != old:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                return self._point(lam)
        finally:
            if torch.get_num_threads() != old:
                torch.set_num_threads(old)

    def _point(self, lam: float) -> SweepPoint:
        t0 = time.perf_counter()
        u = self.displacement(lam)
        t1 = time.perf_counter()
        warped = warp(self.moving_batch, u)[0, 0].cpu().numpy()
        u_cpu = u.cpu()
        deform = deformation_metrics(u_cpu)
        det = jacobian_determinant_map(u_cpu)[0].numpy()
        warped_labels, dice, dice_mean = None, {}, None
        if self.moving_labels is not None and self.fixed_labels is not None:
            warped_labels = warp_labels(self.moving_labels, u)[0, 0].cpu().numpy()
            per_label = dice_per_label(self.fixed_labels, warped_labels, self._codes)
            dice = {label_name(k, self.label_names): v for k, v in per_label.items()}
            dice_mean = mean_over_present(dice, self.presence).mean
        return SweepPoint(
            lam=lam,
            displacement=u_cpu,
            warped=warped,
            warped_labels=warped_labels,
            jacobian=det,
            dice_mean=dice_mean,
            dice=dice,
            folding_percent=deform["folding_percent"],
            sdlogj=deform["sdlogj"],
            ndv_percent=deform["ndv_percent"],
            predict_s=t1 - t0,
            total_s=time.perf_counter() - t0,
        )

    def curve(self, lambdas: Sequence[float] | None = None) -> SweepCurve:
        """Dice, folding and SDlogJ per lambda (default :func:`default_lambdas`, 11 values)."""
        lams = default_lambdas() if lambdas is None else [_check_lambda(x) for x in lambdas]
        if not lams:
            raise ValueError("lambdas must hold at least one value in [0, 1]")
        points = [self.at(x) for x in lams]
        return SweepCurve(
            lambdas=lams,
            dice_mean=[p.dice_mean for p in points],
            folding_percent=[p.folding_percent for p in points],
            sdlogj=[p.sdlogj for p in points],
            seconds=[p.total_s for p in points],
        )
