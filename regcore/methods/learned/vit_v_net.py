"""ViT-V-Net (Chen et al., MIDL 2021): a convolutional encoder, a small vision-transformer bottleneck
and a V-Net/U-Net decoder with skip connections predict a dense displacement.

Network (2D or 3D), input ``(B, 2, *S)`` = (moving, fixed), each size a multiple of
:meth:`ViTVNet.divisor_for` (``2^(levels-1) * patch``):

* encoder: ``len(widths)`` convolutional levels (one 2x down-sampling between levels), features kept
  as skips;
* ViT bottleneck: the deepest features are cut into ``patch^n`` patches (a strided convolution, the
  patch embedding), a learned position embedding (stored on a small grid and interpolated to the
  token grid, so any input size works) is added and ``depth`` pre-norm transformer blocks
  (:class:`torch.nn.TransformerEncoder`) let every patch attend to every other one;
* decoder: tokens back to a feature map, then up-sampling + concatenated skip + convolution per level
  down to full resolution; a zero-initialised head gives ``(B, n, *S)``: a displacement (or a velocity
  when diffeomorphic) in voxels, fixed -> moving (``warped = moving o (id + u)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, dense_prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import Block


@dataclass(frozen=True)
class ViTVNetConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32, 48),
        "Encoder channels per level, finest first (one 2x down-sampling between levels).",
        range=(1, 512),
    )
    patch: int = param(
        2, "Patch size (feature-map voxels per axis) of the ViT patch embedding.", range=(1, 8)
    )
    hidden: int = param(64, "Token width of the transformer (divisible by heads).", range=(8, 768))
    depth: int = param(2, "Transformer blocks in the bottleneck.", range=(1, 12))
    heads: int = param(4, "Attention heads per block.", range=(1, 16))
    mlp_ratio: float = param(2.0, "Transformer MLP width / token width.", range=(1.0, 8.0), advanced=True)
    pos_grid: int = param(
        8, "Side of the stored position-embedding grid (interpolated to the token grid).", range=(2, 64)
    )
    diffeomorphic: bool = param(False, "Predict a stationary velocity integrated by scaling and squaring.")
    int_steps: int = param(7, "Scaling-and-squaring steps when diffeomorphic.", range=(1, 12))


class ViTVNet(nn.Module):
    """Conv encoder + ViT bottleneck + conv decoder with skips (see the module docstring).

    Args:
        dims: 2 or 3.
        widths: encoder channels per level, finest first (at least 2 levels).
        patch: ViT patch size on the deepest feature map.
        hidden, depth, heads, mlp_ratio: transformer width, blocks, heads, MLP ratio.
        pos_grid: side of the learned position-embedding grid.
    """

    def __init__(
        self,
        dims: int,
        widths: tuple[int, ...] = (16, 32, 32, 48),
        patch: int = 2,
        hidden: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        pos_grid: int = 8,
    ):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if len(widths) < 2:
            raise ValueError(f"widths needs at least 2 levels, got {widths!r}")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims, self.patch = dims, patch
        self.divisor = self.divisor_for(widths, patch)
        self.stem = Block(dims, 2, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(
                Block(dims, widths[i], widths[i + 1], stride=2), Block(dims, widths[i + 1], widths[i + 1])
            )
            for i in range(len(widths) - 1)
        )
        self.embed = conv(widths[-1], hidden, patch, stride=patch)  # patch embedding
        self.pos = nn.Parameter(torch.zeros(1, hidden, *(pos_grid,) * dims))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            dim_feedforward=int(hidden * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, depth, norm=nn.LayerNorm(hidden), enable_nested_tensor=False
        )
        self.unembed = Block(dims, hidden, widths[-1])
        # decoder: deepest level first; the first step undoes the patch embedding (up by `patch`)
        self.dec = nn.ModuleList(Block(dims, widths[i] * 2, widths[i]) for i in reversed(range(len(widths))))
        self.proj = nn.ModuleList(
            Block(dims, widths[i + 1], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.head = conv(widths[0], dims, 3, padding=1)
        nn.init.normal_(self.head.weight, std=1e-5)
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def divisor_for(widths: tuple[int, ...], patch: int) -> int:
        """Spatial sizes must be multiples of this (encoder down-samplings times the patch size)."""
        return 2 ** (len(widths) - 1) * patch

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Deepest features ``(B, C, *s)`` -> transformer output as a map ``(B, hidden, *s/patch)``."""
        e = self.embed(x)
        grid = e.shape[2:]
        mode = "bilinear" if self.dims == 2 else "trilinear"
        e = e + F.interpolate(self.pos, size=grid, mode=mode, align_corners=False)
        t = self.transformer(e.flatten(2).transpose(1, 2))  # (B, tokens, hidden)
        return t.transpose(1, 2).reshape(e.shape)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> ``(B, dims, *S)`` vector field in voxels (fixed -> moving)."""
        if pair.ndim != self.dims + 2 or pair.shape[1] != 2:
            raise ValueError(
                f"pair must be (B, 2, *S) with {self.dims} spatial axes, got {tuple(pair.shape)}"
            )
        if any(s % self.divisor for s in pair.shape[2:]):
            raise ValueError(f"spatial shape {tuple(pair.shape[2:])} must be divisible by {self.divisor}")
        skips = [self.stem(pair)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = self.unembed(self.tokens(skips[-1]))
        for i, dec in enumerate(self.dec):
            skip = skips[-1 - i]
            y = F.interpolate(y, size=skip.shape[2:], mode="nearest")
            y = dec(torch.cat([y, skip], 1))
            if i < len(self.proj):
                y = self.proj[i](y)
        return self.head(y)


@register_family
class ViTVNetFamily(LearnedFamily):
    name = "vit_v_net"
    title = "ViT-V-Net (ViT bottleneck in a V-Net)"
    summary = (
        "A convolutional encoder shrinks the stacked pair to a small feature map, which is cut into "
        "patches; a vision transformer lets every patch attend to every other one, so the network can "
        "relate distant structures that a plain U-Net only sees through many layers. A V-Net decoder "
        "with skip connections brings the transformer's features back to full resolution and outputs "
        "a dense displacement in one forward pass."
    )
    paper = (
        "Chen et al., ViT-V-Net: Vision Transformer for Unsupervised Volumetric Medical Image Registration, "
        "MIDL 2021"
    )
    supervision = Supervision.WEAK
    Config = ViTVNetConfig

    def build(self, dims: int, config: ViTVNetConfig) -> nn.ModuleDict:
        net = ViTVNet(
            dims,
            widths=tuple(config.widths),
            patch=config.patch,
            hidden=config.hidden,
            depth=config.depth,
            heads=config.heads,
            mlp_ratio=config.mlp_ratio,
            pos_grid=config.pos_grid,
        )
        return nn.ModuleDict({"net": net})

    def divisor(self, dims: int, config: ViTVNetConfig) -> int:
        return ViTVNet.divisor_for(tuple(config.widths), config.patch)

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: ViTVNetConfig, settings=None
    ) -> Prediction:
        field = nets["net"](torch.cat([moving, fixed], 1))
        return dense_prediction(field, config.diffeomorphic, config.int_steps)
