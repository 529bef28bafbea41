"""One registration run as a typed record.

``RunRecord(pair, result, metrics)`` is what the app keeps per run and what the QA report and
``regcore report`` read. Everything derived from the run is computed here once, on first use,
and cached on the record (never in the pages):

* ``before_metrics``: :func:`regcore.metrics.evaluate_identity` on the same pair (the "before
  registration" row, same keys as ``metrics``);
* ``jacobian``: ``det(I + du/dx)`` of the displacement (:func:`regcore.spatial.jacobian.jacobian_determinant`);
* ``fixed_labels``, ``moving_labels``, ``warped_labels``: label maps on the FIXED grid;
* ``landmarks``: per-landmark before/after errors and positions (:func:`regcore.metrics.landmarks.landmark_errors`).

Conventions: ``result.displacement`` is ``(1, ndim, *S)`` in voxels of the fixed grid and maps
fixed -> moving (``warped = moving o phi``); ``result.moving`` is the moving image already
resampled onto the fixed grid (as :func:`regcore.register.run_registration` returns it).

The run folder the CLI writes and reads is :mod:`regcore.run_folder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from regcore.data.pairs import Pair
from regcore.image import Image
from regcore.methods.base import RegistrationResult
from regcore.metrics.landmarks import LandmarkErrors, landmark_errors

__all__ = ["RunRecord", "RunSlice"]


@dataclass(frozen=True, eq=False)
class RunSlice:
    """2D arrays of one slice of a run (the whole image in 2D), ready to draw.

    Attributes:
        fixed, moving, warped: ``(H, W)`` intensities on the fixed grid (moving = before registration).
        disp: ``(2, H, W)`` in-plane displacement components (voxels, fixed -> moving).
        jac: ``(H, W)`` Jacobian determinant of the full (3D) transform at this slice.
        fixed_labels, moving_labels, warped_labels: ``(H, W)`` label maps or None.
        axis, index: the slice (None, None in 2D); axes of the panel are ``viz.slice_axes(ndim, axis)``.
        flips: ``viz.display_flips`` for the panel (radiological display).
    """

    fixed: np.ndarray
    moving: np.ndarray
    warped: np.ndarray
    disp: np.ndarray
    jac: np.ndarray
    fixed_labels: np.ndarray | None = None
    moving_labels: np.ndarray | None = None
    warped_labels: np.ndarray | None = None
    axis: int | None = None
    index: int | None = None
    flips: tuple[bool, bool] = (False, False)


def _on_fixed_grid(labels: Image | None, fixed: Image) -> Image | None:
    if labels is None:
        return None
    from regcore.register import prepare_moving

    return prepare_moving(fixed, labels)


@dataclass(eq=False)
class RunRecord:
    """A registration run: the pair, the method's result and its metrics, plus cached derived data.

    Attributes:
        pair: the :class:`~regcore.data.Pair` that was registered (moving on its own grid is fine).
        result: the :class:`~regcore.methods.base.RegistrationResult` (``result.moving`` on the fixed grid).
        metrics: :func:`regcore.metrics.evaluate` dict after registration.
        label: the run's name in a session or run folder.
        before: "no registration" metrics when already known (e.g. read from a run folder);
            otherwise computed on first access of :attr:`before_metrics`.
    """

    pair: Pair
    result: RegistrationResult
    metrics: dict = field(default_factory=dict)
    label: str = ""
    before: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pair, Pair):
            raise TypeError(f"pair must be a regcore.data.Pair, got {type(self.pair).__name__}")
        if not isinstance(self.result, RegistrationResult):
            raise TypeError(f"result must be a RegistrationResult, got {type(self.result).__name__}")
        if not isinstance(self.metrics, dict):
            raise TypeError(
                f"metrics must be a dict (regcore.metrics.evaluate), got {type(self.metrics).__name__}"
            )
        geom = self.result.fixed.geometry
        u = self.result.displacement
        if not isinstance(u, torch.Tensor) or tuple(u.shape) != (1, geom.ndim, *geom.shape):
            raise ValueError(
                f"result.displacement must be (1, {geom.ndim}, *{geom.shape}), got "
                f"{tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__}"
            )

    # -- plain facts -------------------------------------------------------------------------
    @property
    def pair_name(self) -> str:
        return self.pair.name

    @property
    def method(self) -> str:
        return str(self.metrics.get("method") or self.result.method)

    @property
    def ndim(self) -> int:
        return self.result.fixed.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return self.result.fixed.shape

    @property
    def label_names(self) -> dict[int, str]:
        names = self.pair.label_names or {}
        if not names:
            for lab in (self.pair.fixed_labels, self.pair.moving_labels):
                if lab is not None and lab.label_names:
                    names = lab.label_names
                    break
        return dict(names)

    # -- derived, computed once ----------------------------------------------------------------
    @cached_property
    def fixed_labels(self) -> Image | None:
        """The pair's fixed labels on the fixed grid (resampled when they lie elsewhere)."""
        return _on_fixed_grid(self.pair.fixed_labels, self.result.fixed)

    @cached_property
    def moving_labels(self) -> Image | None:
        """The pair's moving labels resampled onto the fixed grid (not warped: "before")."""
        return _on_fixed_grid(self.pair.moving_labels, self.result.fixed)

    @cached_property
    def warped_labels(self) -> Image | None:
        """Moving labels warped onto the fixed grid (nearest neighbour); None without labels."""
        extra = self.result.extras.get("warped_labels")
        if isinstance(extra, Image):
            return extra
        if self.moving_labels is None:
            return None
        from regcore.spatial.warp import warp_labels

        u = self.result.displacement.detach().float().cpu()
        out = warp_labels(self.moving_labels.data[None].long(), u)
        return self.moving_labels.with_data(out[0].cpu())

    @property
    def before_metrics(self) -> dict:
        """:func:`regcore.metrics.evaluate_identity` on this pair (same keys as ``metrics``), computed once."""
        if self.before is None:
            from regcore.metrics.evaluate import evaluate_identity

            self.before = evaluate_identity(
                self.result.fixed,
                self.result.moving,
                fixed_labels=self.fixed_labels,
                moving_labels=self.moving_labels,
                fixed_landmarks=self.pair.fixed_landmarks,
                moving_landmarks=self.pair.moving_landmarks,
                label_names=self.label_names or None,
            )
        return self.before

    @cached_property
    def jacobian(self) -> np.ndarray:
        """``det(I + du/dx)`` of the displacement, ``(*S)`` float32; <= 0 marks folding."""
        from regcore.spatial.jacobian import jacobian_determinant

        with torch.no_grad():
            det = jacobian_determinant(self.result.displacement.detach().float().cpu())
        return det[0].numpy()

    @cached_property
    def landmarks(self) -> LandmarkErrors | None:
        """Per-landmark errors before/after and their fixed-grid voxel positions; None without both sets."""
        fl, ml = self.pair.fixed_landmarks, self.pair.moving_landmarks
        if fl is None or ml is None:
            return None
        return landmark_errors(fl, ml, self.result.displacement, self.result.fixed.geometry)

    # -- slices for drawing ----------------------------------------------------------------------
    def default_slice(self, axis: int | None = None) -> tuple[int | None, int | None]:
        """``(None, None)`` in 2D; in 3D the middle slice along ``axis`` (default 2, axial)."""
        if self.ndim == 2:
            return None, None
        axis = 2 if axis is None else int(axis)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        return axis, self.shape[axis] // 2

    def slice(self, axis: int | None = None, index: int | None = None) -> RunSlice:
        """The run's arrays at one slice (3D: ``axis``/``index``, default the middle axial slice; 2D: all)."""
        if self.ndim == 3 and (axis is None or index is None):
            axis, index = self.default_slice(axis)
        if self.ndim == 2:
            axis = index = None

        def take(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            return a if axis is None else viz.extract_slice(a, axis, index)

        from regcore import viz  # plotly behind it: imported only when a slice is drawn

        r = self.result
        disp = r.displacement[0].detach().float().cpu().numpy()
        labels = {
            k: (img.numpy() if img is not None else None)
            for k, img in (
                ("fixed_labels", self.fixed_labels),
                ("moving_labels", self.moving_labels),
                ("warped_labels", self.warped_labels),
            )
        }
        codes = r.fixed.geometry.orientation_codes()
        return RunSlice(
            fixed=take(r.fixed.numpy()),
            moving=take(r.moving.numpy()),
            warped=take(r.warped.numpy()),
            disp=disp if axis is None else viz.slice_field(disp, axis, index),
            jac=take(self.jacobian),
            **{k: take(v) for k, v in labels.items()},
            axis=axis,
            index=index,
            flips=viz.display_flips(codes, viz.slice_axes(self.ndim, axis)),
        )
