"""Which structures both images hold, and means over them (for display; stored metrics are unchanged).

:func:`regcore.metrics.evaluate` scores every label present in EITHER label map, so a structure missing
from one image scores Dice 0 (HD95 undefined) and pulls ``dice_mean`` down although registration cannot
fix it. The app and the QA report show, by default, the mean over the labels present in BOTH the fixed
and the moving label maps (both on the fixed grid, before registration) and list the labels they skip:

    >>> both = labels_in_both(fixed_labels, moving_labels, label_names)
    >>> summary = mean_over_present(metrics["dice"], both)   # PresenceMean(mean, used, skipped)

Keys are structure names as :func:`regcore.metrics.overlap.label_name` makes them (the keys of
``metrics["dice"]``, ``metrics["hd95"]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from regcore.metrics.overlap import DIRECT_COUNT_MAX, as_label_array, label_name


@dataclass(frozen=True)
class LabelPresence:
    """Structure names present in both label maps, only in fixed, only in moving (each sorted by value)."""

    both: tuple[str, ...]
    only_fixed: tuple[str, ...]
    only_moving: tuple[str, ...]

    @property
    def skipped(self) -> tuple[str, ...]:
        """Names present in only one image (left out of the "present in both" means)."""
        return self.only_fixed + self.only_moving


def labels_in_both(
    fixed_labels, moving_labels, label_names: Mapping[int, str] | None = None
) -> LabelPresence:
    """Which non-zero label values occur in ``fixed_labels`` and ``moving_labels`` (Images, tensors or
    arrays on one grid; shapes may differ), as structure names (``label_names``; the value when unnamed)."""
    in_a = _present(
        as_label_array(fixed_labels, "fixed_labels", getattr(fixed_labels, "ndim", None), compact=True)
    )
    in_b = _present(
        as_label_array(moving_labels, "moving_labels", getattr(moving_labels, "ndim", None), compact=True)
    )

    def names(values) -> tuple[str, ...]:
        return tuple(label_name(v, label_names) for v in sorted(values))

    return LabelPresence(
        both=names(in_a & in_b), only_fixed=names(in_a - in_b), only_moving=names(in_b - in_a)
    )


def _present(labels: np.ndarray) -> set[int]:
    """Non-zero values of a label map (one counting pass for small values: ~10x faster than np.unique)."""
    if labels.size and int(labels.max()) < DIRECT_COUNT_MAX:
        values = np.flatnonzero(np.bincount(labels.ravel()))
    else:
        values = np.unique(labels)
    return {int(v) for v in values if v != 0}


@dataclass(frozen=True)
class PresenceMean:
    """A mean over the structures present in both images: the value (None when none is defined), the
    structures used and the structures skipped (present in only one image)."""

    mean: float | None
    used: tuple[str, ...]
    skipped: tuple[str, ...]


def mean_over_present(
    per_structure: Mapping[str, float | None], presence: LabelPresence | None
) -> PresenceMean:
    """Mean of ``per_structure`` (e.g. ``metrics["dice"]``) over ``presence.both``; None/NaN values are
    left out. ``presence=None`` means "include all" (every structure of ``per_structure``)."""
    if not isinstance(per_structure, Mapping):
        raise TypeError(
            f"per_structure must be a dict of structure -> value, got {type(per_structure).__name__}"
        )
    keep = set(per_structure) if presence is None else set(presence.both)
    used = tuple(k for k in per_structure if k in keep)
    skipped = tuple(k for k in per_structure if k not in keep)
    values = [
        float(per_structure[k])
        for k in used
        if per_structure[k] is not None and math.isfinite(float(per_structure[k]))
    ]
    return PresenceMean(float(np.mean(values)) if values else None, used, skipped)
