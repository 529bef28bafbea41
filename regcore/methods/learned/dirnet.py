"""DIRNet-style B-spline CNN (de Vos et al., DLMIA 2017): a CNN predicts the displacements of a coarse
grid of B-spline control points; the dense field is their cubic B-spline interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.bspline import bspline_to_displacement, control_grid_shape


@dataclass(frozen=True)
class DIRNetConfig:
    widths: tuple[int, ...] = param((16, 32, 32, 32), "Feature network channels per level, finest first.")
    features: int = param(16, "Feature channels pooled onto the control grid.", range=(2, 128))
    control_spacing: int = param(
        8, "Control-point spacing in model voxels (larger = smoother, fewer points).", range=(2, 64)
    )


class ControlPointHead(nn.Module):
    """Features ``(B, F, *S)`` -> control-point displacements ``(B, n, *C)``: average over each control
    point's neighbourhood (adaptive pooling to the control grid), then a 1x1 convolution (zero-initialised)."""

    def __init__(self, dims: int, features: int):
        super().__init__()
        self.dims = dims
        self.out = (nn.Conv2d if dims == 2 else nn.Conv3d)(features, dims, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, control_shape: tuple[int, ...]) -> torch.Tensor:
        pool = nn.functional.adaptive_avg_pool2d if self.dims == 2 else nn.functional.adaptive_avg_pool3d
        return self.out(pool(features, control_shape))


@register_family
class DIRNet(LearnedFamily):
    name = "dirnet"
    title = "DIRNet (B-spline CNN)"
    paper = "de Vos et al., End-to-end unsupervised deformable image registration with a CNN, DLMIA 2017"
    summary = (
        "Instead of a vector for every voxel, the network moves a coarse grid of control points, one "
        "every few voxels, and the field in between is the smooth cubic B-spline through them: the "
        "same free-form deformation classical B-spline registration optimises, but predicted in one "
        "pass. The control-point spacing sets how fine the deformation can be."
    )
    supervision = Supervision.UNSUPERVISED
    Config = DIRNetConfig

    def build(self, dims: int, config: DIRNetConfig) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "features": ConvUNet(dims, out_channels=config.features, widths=config.widths),
                "head": ControlPointHead(dims, config.features),
            }
        )

    def divisor(self, dims: int, config: DIRNetConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: DIRNetConfig, settings=None
    ) -> Prediction:
        shape = tuple(fixed.shape[2:])
        control = control_grid_shape(shape, config.control_spacing)
        coeffs = nets["head"](nets["features"](torch.cat([moving, fixed], 1)), control)
        return Prediction(
            displacement=bspline_to_displacement(coeffs, shape, config.control_spacing),
            extras={"control_points": coeffs},
        )
