"""CNN encoder -> affine parameters (fixed voxel -> moving voxel), for 2D and 3D.

A strided-conv encoder, adaptive average pooling to a ``4^n`` grid (keeps *where* features
are, which global pooling would lose, so translations and rotations are learnable) and a
linear layer regress ``n*(n+1)`` numbers that are
added to the identity in a *normalised* frame (voxel coordinates scaled to [-1, 1], so the
parameters are resolution independent; zero-initialised head = identity). The matrix is
converted to regcore's voxel convention ``(B, n, n+1)``: ``moving_voxel = A @ fixed_voxel + t``,
component order = tensor axis order.
"""

from __future__ import annotations

import torch
from torch import nn


def normalised_to_voxel_affine(theta: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Affine in the [-1, 1] cube ``(B, n, n+1)`` (tensor-axis order) -> voxel affine ``(B, n, n+1)``.

    With ``p = S v - 1``, ``S = diag(2/(size-1))``: ``v' = S^-1 (M (S v - 1) + b + 1)``.
    """
    n = len(shape)
    s = torch.tensor([2.0 / max(k - 1, 1) for k in shape], device=theta.device, dtype=theta.dtype)
    m, b = theta[:, :, :n], theta[:, :, n]
    a = m * s.view(1, 1, n) / s.view(1, n, 1)
    t = (b + 1.0 - m.sum(-1)) / s.view(1, n)
    return torch.cat([a, t.unsqueeze(-1)], -1)


class AffineHead(nn.Module):
    """Encoder + linear head regressing an affine transform.

    Args:
        dims: 2 or 3.
        channels: encoder widths; each level is a stride-2 3x3 conv + LeakyReLU.
    """

    def __init__(self, dims: int, channels: tuple[int, ...] = (16, 32, 32, 64, 64)):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        layers, cin = [], 2
        for c in channels:
            layers += [conv(cin, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            cin = c
        self.dims = dims
        self.encoder = nn.Sequential(*layers)
        self.pool = (nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d)(4)
        self.fc = nn.Linear(cin * 4**dims, dims * (dims + 1))
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.divisor = 1

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> voxel affine ``(B, dims, dims+1)`` (fixed voxel -> moving voxel)."""
        n = self.dims
        feat = self.pool(self.encoder(pair)).flatten(1)
        delta = self.fc(feat).view(-1, n, n + 1)
        eye = torch.eye(n, n + 1, device=pair.device, dtype=pair.dtype).unsqueeze(0)
        return normalised_to_voxel_affine(eye + delta, tuple(pair.shape[2:]))
