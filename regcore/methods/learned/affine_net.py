"""Affine network: a CNN encoder regresses a global affine transform (fixed voxel -> moving voxel).

Registered as ``"affine_net"`` (family LEARNED). Default weights: ``assets/models/affine2d.pt``.
The result carries ``affine`` ``(ndim, ndim+1)`` on the fixed grid and the dense displacement.
"""

from __future__ import annotations

from dataclasses import dataclass

from regcore.config import param
from regcore.methods.learned._common import LearnedMethod
from regcore.methods.registry import Family, MethodSpec, Supervision, register_method


@dataclass(frozen=True)
class AffineNetConfig:
    checkpoint: str = param("assets/models/affine2d.pt",
                            "Weights file (.pt) from `regcore train` or assets/models; 2D default shipped.")
    device: str = param("auto", "auto = CUDA when available, else CPU.", choices=("auto", "cpu", "cuda"))


SPEC = register_method(MethodSpec(
    name="affine_net", title="Affine network (CNN)", config_cls=AffineNetConfig,
    factory=lambda: LearnedMethod("affine_net", "affine"), family=Family.LEARNED,
    supervision=Supervision.DUAL, dims=(2, 3), needs_training=True,
    description="A CNN regresses a global affine transform in one forward pass."))
