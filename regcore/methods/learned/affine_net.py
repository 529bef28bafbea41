"""Affine network: a CNN encoder regresses a global affine transform (fixed voxel -> moving voxel).

Default weights: ``assets/models/affine_net2d.pt``. The prediction carries ``affine`` ``(B, n, n+1)``
and the dense displacement it implies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.affine_head import AffineHead
from regcore.spatial.affine import affine_to_displacement


@dataclass(frozen=True)
class AffineNetConfig:
    channels: tuple[int, ...] = param(
        (16, 32, 32, 64, 64), "Encoder widths; each level is a stride-2 conv.", range=(1, 512)
    )


@register_family
class AffineNet(LearnedFamily):
    name = "affine_net"
    title = "Affine network (CNN)"
    summary = (
        "A small CNN reads the pair and outputs the handful of numbers of one global affine "
        "transform (rotation, scaling, shear, translation). It is the learned counterpart of "
        "classical affine registration and the usual first stage before a deformable network."
    )
    paper = "de Vos et al., A deep learning framework for unsupervised affine and deformable image registration, MedIA 2019"
    supervision = Supervision.DUAL
    Config = AffineNetConfig

    def build(self, dims: int, config: AffineNetConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"net": AffineHead(dims, channels=config.channels)})

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: AffineNetConfig, settings=None
    ) -> Prediction:
        affine = nets["net"](torch.cat([moving, fixed], 1))
        return Prediction(displacement=affine_to_displacement(affine, tuple(fixed.shape[2:])), affine=affine)
