"""TransMorph-style network: a small Swin transformer encoder + convolutional decoder.

Encoder: MONAI's :class:`monai.networks.nets.swin_unetr.SwinTransformer` (shifted-window
attention, patch merging; 2D or 3D). It returns five feature maps at strides 2..32; a
light U-Net-like decoder (upsample, concatenate skip, two 3x3 convolutions) brings them
back to full resolution, with a full-resolution convolutional skip from the input pair as
in TransMorph (Chen et al., MedIA 2022). A zero-initialised head outputs ``ndim`` channels.

Input ``(B, 2, *S)`` (moving, fixed), each size divisible by :attr:`divisor` (32);
output ``(B, ndim, *S)`` vector field in voxels (fixed -> moving).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_block(dims: int, cin: int, cout: int) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(
        conv(cin, cout, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        conv(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
    )


class SwinFlowNet(nn.Module):
    """Swin encoder + conv decoder.

    Args:
        dims: 2 or 3.
        embed_dim: channels after patch embedding (doubles at each of the 4 stages).
        window: attention window size (voxels of the feature map), same for every axis.
        depths: transformer blocks per stage (4 stages).
        heads: attention heads per stage; ``embed_dim * 2**i`` must be divisible by ``heads[i]``.
        skip_channels: width of the full-resolution convolutional skip.
        decoder_max_channels: cap on decoder widths (keeps the weights small).
    """

    divisor = 32

    def __init__(
        self,
        dims: int,
        embed_dim: int = 12,
        window: int = 4,
        depths: tuple[int, ...] = (1, 1, 1, 1),
        heads: tuple[int, ...] = (2, 2, 4, 4),
        skip_channels: int = 16,
        decoder_max_channels: int = 32,
    ):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if len(depths) != 4 or len(heads) != 4:
            raise ValueError(f"depths and heads need 4 entries (stages), got {depths!r}, {heads!r}")
        for i, h in enumerate(heads):
            if (embed_dim * 2**i) % h:
                raise ValueError(f"stage {i}: width {embed_dim * 2**i} not divisible by heads {h}")
        self.dims = dims
        from monai.networks.nets.swin_unetr import SwinTransformer  # lazy: `import monai` costs seconds

        self.encoder = SwinTransformer(
            in_chans=2,
            embed_dim=embed_dim,
            window_size=(window,) * dims,
            patch_size=(2,) * dims,
            depths=tuple(depths),
            num_heads=tuple(heads),
            spatial_dims=dims,
        )
        widths = [embed_dim * 2**i for i in range(5)]  # strides 2, 4, 8, 16, 32
        self.skip = _conv_block(dims, 2, skip_channels)  # stride 1
        self.decoders = nn.ModuleList()
        cin = widths[4]
        for w in reversed(widths[:4]):  # 32->16->8->4->2
            out = min(w, decoder_max_channels)
            self.decoders.append(_conv_block(dims, cin + w, out))
            cin = out
        self.last = _conv_block(dims, cin + skip_channels, skip_channels)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.flow = conv(skip_channels, dims, 3, padding=1)
        nn.init.normal_(self.flow.weight, std=1e-5)
        nn.init.zeros_(self.flow.bias)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> ``(B, dims, *S)`` vector field in voxels."""
        feats = self.encoder(pair, normalize=True)
        x = feats[4]
        for dec, skip in zip(self.decoders, reversed(feats[:4])):
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = dec(torch.cat([x, skip], 1))
        x = F.interpolate(x, size=pair.shape[2:], mode="nearest")
        x = self.last(torch.cat([x, self.skip(pair)], 1))
        return self.flow(x)
