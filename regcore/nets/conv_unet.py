"""A small configurable 2D/3D U-Net for learned families: plain, large-kernel (LKU-Net) and
conditioned (HyperMorph-style feature modulation).

Input ``(B, C_in, *S)`` (each size divisible by :attr:`ConvUNet.divisor`), output
``(B, out_channels, *S)``; the last convolution starts near zero, so an untrained net predicts
(almost) a zero field. With ``large_kernel = k`` every block is an LK block (Jia et al., MLMI 2022):
``k^n`` conv + ``3^n`` conv + ``1^n`` conv + identity, summed, then LeakyReLU, which gives a wide
receptive field with few layers. With ``condition_dim > 0`` the forward pass takes a condition
``(B, condition_dim)`` (e.g. a regularisation weight); a small MLP turns it into a per-channel
scale and shift of every block's output (FiLM), so one network covers the whole range of the
condition.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


class Block(nn.Module):
    """conv (3^n, or an LK sum) + LeakyReLU, optionally strided by 2."""

    def __init__(self, dims: int, cin: int, cout: int, large_kernel: int = 0, stride: int = 1):
        super().__init__()
        conv = _conv(dims)
        self.main = conv(cin, cout, 3, stride=stride, padding=1)
        self.large: nn.Module | None = None
        self.point: nn.Module | None = None
        if large_kernel and stride == 1:
            self.large = conv(cin, cout, large_kernel, stride=stride, padding=large_kernel // 2)
            self.point = conv(cin, cout, 1, stride=stride)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        if self.large is not None and self.point is not None:
            y = y + self.large(x) + self.point(x)
            if x.shape[1] == y.shape[1]:
                y = y + x
        return self.act(y)


class ConvUNet(nn.Module):
    """U-Net: ``len(widths) - 1`` stride-2 levels, skip connections, nearest up-sampling.

    Args:
        dims: 2 or 3.
        in_channels, out_channels: input and output channels.
        widths: channels per level, finest first, e.g. ``(16, 32, 32, 32)``.
        large_kernel: 0 for plain 3^n blocks, else the odd LK kernel size (5 or 7).
        condition_dim: size of the FiLM condition vector (0 = unconditioned).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int = 2,
        out_channels: int | None = None,
        widths: tuple[int, ...] = (16, 32, 32, 32),
        large_kernel: int = 0,
        condition_dim: int = 0,
    ):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if len(widths) < 2:
            raise ValueError(f"widths needs at least 2 levels, got {widths!r}")
        if large_kernel and large_kernel % 2 == 0:
            raise ValueError(f"large_kernel must be odd, got {large_kernel}")
        out_channels = out_channels or dims
        self.dims, self.divisor = dims, self.divisor_for(widths)
        self.stem = Block(dims, in_channels, widths[0], large_kernel)
        self.down = nn.ModuleList(
            Block(dims, widths[i], widths[i + 1], 0, stride=2) for i in range(len(widths) - 1)
        )
        self.enc = nn.ModuleList(Block(dims, w, w, large_kernel) for w in widths[1:])
        self.dec = nn.ModuleList(
            Block(dims, widths[i + 1] + widths[i], widths[i], large_kernel)
            for i in reversed(range(len(widths) - 1))
        )
        self.head = _conv(dims)(widths[0], out_channels, 3, padding=1)
        nn.init.normal_(self.head.weight, std=1e-5)
        nn.init.zeros_(self.head.bias)
        blocks = [self.stem, *self.enc, *self.dec]
        self.film: nn.Sequential | None = None
        if condition_dim:
            self.film = nn.Sequential(
                nn.Linear(condition_dim, 64),
                nn.LeakyReLU(0.2),
                nn.Linear(64, 2 * sum(b.main.out_channels for b in blocks)),
            )
        if self.film is not None:
            nn.init.zeros_(self.film[2].weight)
            nn.init.zeros_(self.film[2].bias)

    @staticmethod
    def divisor_for(widths: tuple[int, ...]) -> int:
        """Spatial sizes must be multiples of this: one 2x down-sampling between levels."""
        return 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C_in, *S)`` (+ condition ``(B, condition_dim)``) -> ``(B, out_channels, *S)``."""
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"spatial shape {tuple(x.shape[2:])} must be divisible by {self.divisor}")
        if (self.film is None) != (condition is None):
            raise ValueError("a condition is needed exactly when the net was built with condition_dim > 0")
        mods = iter(self._modulations(condition)) if condition is not None else None

        def modulate(y: torch.Tensor) -> torch.Tensor:
            if mods is None:
                return y
            scale, shift = next(mods)
            view = (y.shape[0], y.shape[1]) + (1,) * self.dims
            return y * (1 + scale.view(view)) + shift.view(view)

        skips = [modulate(self.stem(x))]
        for down, enc in zip(self.down, self.enc):
            skips.append(modulate(enc(down(skips[-1]))))
        y = skips.pop()
        for dec in self.dec:
            skip = skips.pop()
            y = nn.functional.interpolate(y, size=skip.shape[2:], mode="nearest")
            y = modulate(dec(torch.cat([y, skip], 1)))
        return self.head(y)

    def _modulations(self, condition: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.film is None:
            raise ValueError("this net was built without a condition (condition_dim = 0)")
        params = self.film(condition)
        out, i = [], 0
        for b in [self.stem, *self.enc, *self.dec]:
            c = b.main.out_channels
            out.append((params[:, i : i + c], params[:, i + c : i + 2 * c]))
            i += 2 * c
        return out
