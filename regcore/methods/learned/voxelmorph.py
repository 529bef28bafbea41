"""VoxelMorph (Balakrishnan et al., TMI 2019): a U-Net predicts a dense or diffeomorphic field.

Registered as ``"voxelmorph"`` (family LEARNED). Whether the field is integrated from a
velocity (diffeomorphic) is a property of the checkpoint (``arch["diffeomorphic"]``).
Default weights: ``assets/models/voxelmorph2d.pt`` (2D sample brains + synthetic shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

from regcore.config import param
from regcore.methods.learned._common import LearnedMethod
from regcore.methods.registry import Family, MethodSpec, Supervision, register_method


@dataclass(frozen=True)
class VoxelMorphConfig:
    checkpoint: str = param("assets/models/voxelmorph2d.pt",
                            "Weights file (.pt) from `regcore train` or assets/models; 2D default shipped.")
    device: str = param("auto", "auto = CUDA when available, else CPU.", choices=("auto", "cpu", "cuda"))


SPEC = register_method(MethodSpec(
    name="voxelmorph", title="VoxelMorph (U-Net)", config_cls=VoxelMorphConfig,
    factory=lambda: LearnedMethod("voxelmorph", "voxelmorph"), family=Family.LEARNED,
    supervision=Supervision.WEAK, dims=(2, 3), needs_training=True,
    description="A U-Net predicts the deformation in one forward pass (milliseconds); "
                "trained on sample brains and synthetic shapes."))
