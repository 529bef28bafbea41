"""VoxelMorph (Balakrishnan et al., TMI 2019; Dalca et al., MedIA 2019): a U-Net on the stacked
pair predicts a dense displacement, or a velocity integrated by scaling and squaring (diffeomorphic).

Default weights: ``assets/models/voxelmorph2d.pt`` (2D sample brains + synthetic shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, dense_prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.unet import FlowUNet


@dataclass(frozen=True)
class VoxelMorphConfig:
    diffeomorphic: bool = param(False, "Predict a stationary velocity integrated by scaling and squaring.")
    int_steps: int = param(
        7, "Scaling-and-squaring steps (2^steps sub-steps) when diffeomorphic.", range=(1, 12)
    )
    channels: tuple[int, ...] = param(
        (),
        "U-Net encoder/decoder widths in pairs (one pair per 2x "
        "down-sampling); empty = (16,32,...) in 2D, (8,16,...) in 3D.",
        range=(1, 512),
    )
    final_channels: tuple[int, ...] = param(
        (), "Widths of the convolutions after the U-Net; empty = (16,16) in 2D, (8,8) in 3D.", range=(1, 512)
    )


def _widths(config: VoxelMorphConfig, dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    channels = config.channels or (
        (16, 32, 32, 32, 32, 32, 32, 32) if dims == 2 else (8, 16, 16, 16, 16, 16, 16, 16)
    )
    final = config.final_channels or ((16, 16) if dims == 2 else (8, 8))
    return tuple(channels), tuple(final)


@register_family
class VoxelMorph(LearnedFamily):
    name = "voxelmorph"
    title = "VoxelMorph (U-Net)"
    summary = (
        "A U-Net looks at the moving and fixed image stacked together and outputs, for every voxel, "
        "where to fetch the moving image from. It is trained once on many pairs to make the warped "
        "image similar to the fixed one (and labels overlap) while keeping the field smooth; then "
        "registering a new pair is one forward pass, milliseconds instead of minutes. The "
        "diffeomorphic variant predicts a velocity and integrates it, so the map cannot fold."
    )
    paper = "Balakrishnan et al., VoxelMorph, IEEE TMI 2019; Dalca et al., MedIA 2019"
    supervision = Supervision.WEAK
    Config = VoxelMorphConfig
    crop_training = True

    def build(self, dims: int, config: VoxelMorphConfig) -> nn.ModuleDict:
        channels, final = _widths(config, dims)
        return nn.ModuleDict({"net": FlowUNet(dims, channels=channels, final_channels=final)})

    def divisor(self, dims: int, config: VoxelMorphConfig) -> int:
        return 2 ** (len(_widths(config, dims)[0]) // 2)

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: VoxelMorphConfig, settings=None
    ) -> Prediction:
        field = nets["net"](torch.cat([moving, fixed], 1))
        return dense_prediction(field, config.diffeomorphic, config.int_steps)
