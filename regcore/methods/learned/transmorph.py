"""TransMorph (Chen et al., MedIA 2022): Swin transformer encoder + conv decoder -> dense field.

Registered as ``"transmorph"`` (family LEARNED). Default weights: ``assets/models/transmorph2d.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass

from regcore.config import param
from regcore.methods.learned._common import LearnedMethod
from regcore.methods.registry import Family, MethodSpec, Supervision, register_method


@dataclass(frozen=True)
class TransMorphConfig:
    checkpoint: str = param("assets/models/transmorph2d.pt",
                            "Weights file (.pt) from `regcore train` or assets/models; 2D default shipped.")
    device: str = param("auto", "auto = CUDA when available, else CPU.", choices=("auto", "cpu", "cuda"))


SPEC = register_method(MethodSpec(
    name="transmorph", title="TransMorph (Swin transformer)", config_cls=TransMorphConfig,
    factory=lambda: LearnedMethod("transmorph", "transmorph"), family=Family.LEARNED,
    supervision=Supervision.WEAK, dims=(2, 3), needs_training=True,
    description="A small Swin-transformer encoder with a convolutional decoder predicts the deformation."))
