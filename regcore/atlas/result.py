"""What an atlas build returns: the template, its labels and the measures of every iteration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from regcore.image import Image


class AtlasInit(StrEnum):
    """The first template: mean of the affinely aligned subjects, or of the subjects as they are."""

    AFFINE = "affine"
    MEAN = "mean"


@dataclass(frozen=True)
class AtlasIteration:
    """Measures of one template ``T_i`` (``iteration`` 0 = the initial template).

    Attributes:
        sharpness: mean gradient magnitude of ``T_i`` (intensity per mm).
        distance_mm: mean over subjects of the mean length (mm, over the grid) of their displacement
            to ``T_i``; None when ``T_i`` was not registered to (last one without ``evaluate_final``).
        dice: mean over subjects of the Dice of their labels warped to ``T_i`` vs ``T_i``'s label map
            (majority vote of the warped labels); None without labels.
        runtime_s: wall time to make ``T_i`` and register every subject to it.
        registered, failed: registrations that succeeded / failed in this pass.
        subject_dice, subject_distance_mm: per subject (in subject order; NaN where it failed).
    """

    iteration: int
    sharpness: float
    distance_mm: float | None
    dice: float | None
    runtime_s: float
    registered: int = 0
    failed: int = 0
    subject_dice: tuple[float, ...] = ()
    subject_distance_mm: tuple[float, ...] = ()

    def row(self) -> dict[str, Any]:
        """The CSV row (scalars only)."""
        return {
            "iteration": self.iteration,
            "sharpness": self.sharpness,
            "distance_mm": self.distance_mm,
            "dice": self.dice,
            "runtime_s": self.runtime_s,
            "registered": self.registered,
            "failed": self.failed,
        }


@dataclass(eq=False)
class AtlasResult:
    """A built template.

    Attributes:
        template: the final template Image (on the first subject's grid).
        labels: its label map (majority vote of the subjects' warped labels), or None.
        history: one :class:`AtlasIteration` per template ``T_0 .. T_n``.
        templates: the templates ``T_0 .. T_n`` (Images), to show the sharpening.
        method, overrides, init, step: how it was built.
        subjects: subject names, in order.
        initial_alignment_dice: mean Dice of the labels after the initial (affine, or no) alignment
            vs their own majority vote; None without labels.
        warnings: failed registrations and other problems, one line each.
    """

    template: Image
    labels: Image | None
    history: list[AtlasIteration]
    templates: list[Image]
    method: str
    overrides: dict
    init: str
    step: float
    subjects: list[str]
    initial_alignment_dice: float | None = None
    warnings: list[str] = field(default_factory=list)

    def history_rows(self) -> list[dict[str, Any]]:
        return [it.row() for it in self.history]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "overrides": {str(k): str(v) for k, v in self.overrides.items()},
            "init": self.init,
            "step": self.step,
            "subjects": list(self.subjects),
            "initial_alignment_dice": self.initial_alignment_dice,
            "history": [dataclasses.asdict(it) for it in self.history],
            "warnings": list(self.warnings),
        }
