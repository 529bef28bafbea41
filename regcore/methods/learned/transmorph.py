"""TransMorph (Chen et al., MedIA 2022): a Swin-transformer encoder + convolutional decoder predicts
the deformation. Default weights: ``assets/models/transmorph2d.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, dense_prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.swin import SwinFlowNet


@dataclass(frozen=True)
class TransMorphConfig:
    diffeomorphic: bool = param(False, "Predict a stationary velocity integrated by scaling and squaring.")
    int_steps: int = param(7, "Scaling-and-squaring steps when diffeomorphic.", range=(1, 12))
    embed_dim: int = param(
        12, "Channels after patch embedding (doubles at each of the 4 stages).", range=(4, 96)
    )
    window: int = param(4, "Attention window (feature-map voxels per axis).", range=(2, 16))
    depths: tuple[int, ...] = param((1, 1, 1, 1), "Transformer blocks per stage (4 stages).", range=(1, 16))
    heads: tuple[int, ...] = param(
        (2, 2, 4, 4), "Attention heads per stage; embed_dim * 2^i must divide.", range=(1, 64)
    )
    skip_channels: int = param(
        0, "Width of the full-resolution convolutional skip; 0 = 16 in 2D, 8 in 3D.", range=(0, 128)
    )


@register_family
class TransMorph(LearnedFamily):
    name = "transmorph"
    title = "TransMorph (Swin transformer)"
    summary = (
        "Like VoxelMorph, a network predicts the deformation in one pass, but its encoder is a Swin "
        "transformer: the image is cut into patches and self-attention lets every patch compare "
        "itself with distant patches, so large displacements are easier to see. A convolutional "
        "decoder turns the attention features back into a dense field."
    )
    paper = "Chen et al., TransMorph, Medical Image Analysis 2022"
    supervision = Supervision.WEAK
    Config = TransMorphConfig

    def build(self, dims: int, config: TransMorphConfig) -> nn.ModuleDict:
        skip = config.skip_channels or (16 if dims == 2 else 8)
        return nn.ModuleDict(
            {
                "net": SwinFlowNet(
                    dims,
                    embed_dim=config.embed_dim,
                    window=config.window,
                    depths=config.depths,
                    heads=config.heads,
                    skip_channels=skip,
                )
            }
        )

    def divisor(self, dims: int, config: TransMorphConfig) -> int:
        return SwinFlowNet.divisor

    def recipe(self, dims: int) -> dict:
        return {"spacing_mm": 2.0, "train_shape": (96, 128) if dims == 2 else (64, 96, 64)}

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: TransMorphConfig, settings=None
    ) -> Prediction:
        field = nets["net"](torch.cat([moving, fixed], 1))
        return dense_prediction(field, config.diffeomorphic, config.int_steps)
