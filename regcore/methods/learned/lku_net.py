"""LKU-Net (Jia et al., MLMI 2022): a U-Net whose blocks add a large-kernel convolution to the usual
3x3, giving a wide receptive field with few layers and weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, dense_prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet


@dataclass(frozen=True)
class LKUNetConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32, 32),
        "Channels per level, finest first (one 2x down-sampling between levels).",
        range=(1, 512),
    )
    large_kernel: int = param(5, "Size of the large kernel in every block (odd).", choices=(3, 5, 7, 9))
    diffeomorphic: bool = param(False, "Predict a stationary velocity integrated by scaling and squaring.")
    int_steps: int = param(7, "Scaling-and-squaring steps when diffeomorphic.", range=(1, 12))


@register_family
class LKUNet(LearnedFamily):
    name = "lku_net"
    title = "LKU-Net (large-kernel U-Net)"
    summary = (
        "A U-Net like VoxelMorph's, but every block also looks through a large 5x5 (or 7x7) window "
        "next to the usual 3x3 one. Seeing further in one layer lets a small network follow larger "
        "displacements; the paper shows it matching transformers with far fewer weights."
    )
    paper = "Jia et al., U-Net vs Transformer: Is U-Net Outdated in Medical Image Registration?, MLMI 2022"
    supervision = Supervision.WEAK
    Config = LKUNetConfig
    crop_training = True

    def build(self, dims: int, config: LKUNetConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"net": ConvUNet(dims, widths=config.widths, large_kernel=config.large_kernel)})

    def divisor(self, dims: int, config: LKUNetConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: LKUNetConfig, settings=None
    ) -> Prediction:
        field = nets["net"](torch.cat([moving, fixed], 1))
        return dense_prediction(field, config.diffeomorphic, config.int_steps)
