"""VoxelMorph-style U-Net that maps a (moving, fixed) pair to a 2D/3D vector field.

The backbone is MONAI's :class:`monai.networks.nets.VoxelMorphUNet` (max-pool down,
nearest-neighbour up, skip connections); its last convolution (``ndim`` output channels) is
initialised near zero, so an untrained net predicts the identity transform.

Input ``(B, 2, *S)`` = moving and fixed stacked on channels (moving first); every spatial
size must be divisible by :attr:`VoxelMorphUNet2.divisor`. Output ``(B, ndim, *S)``: a
displacement or stationary velocity in voxels (component i along tensor axis i,
fixed -> moving), interpreted by :class:`regcore.nets.registration_net.RegistrationNet`.
"""

from __future__ import annotations

import torch
from torch import nn


class FlowUNet(nn.Module):
    """MONAI VoxelMorph U-Net with a near-zero initial output.

    Args:
        dims: 2 or 3 spatial dimensions.
        channels: encoder/decoder widths in pairs, as MONAI's VoxelMorphUNet expects; the
            number of pairs is the number of 2x down-samplings.
        final_channels: widths of the convolutions after the U-Net.
    """

    def __init__(
        self,
        dims: int,
        channels: tuple[int, ...] = (16, 32, 32, 32, 32, 32),
        final_channels: tuple[int, ...] = (16, 16),
    ):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if len(channels) < 2 or len(channels) % 2:
            raise ValueError(f"channels must be an even-length tuple (pairs), got {channels!r}")
        self.dims = dims
        from monai.networks.nets import VoxelMorphUNet  # lazy: `import monai` costs seconds

        self.backbone = VoxelMorphUNet(
            spatial_dims=dims,
            in_channels=2,
            unet_out_channels=final_channels[0],
            channels=tuple(channels),
            final_conv_channels=tuple(final_channels),
        )
        # MONAI's last convolution ("final_conv_out") already outputs ``dims`` channels:
        # initialise it near zero so an untrained net predicts (almost) the identity.
        last = [m for m in self.backbone.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))][-1]
        nn.init.normal_(last.weight, std=1e-5)
        nn.init.zeros_(last.bias)
        self.divisor = 2 ** (len(channels) // 2)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> ``(B, dims, *S)`` vector field in voxels."""
        return self.backbone(pair)
