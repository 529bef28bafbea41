"""DeepFLASH-style band-limited velocity (Wang & Zhang, CVPR 2020): the network predicts only the lowest
spatial frequencies of a stationary velocity field; the field is their inverse Fourier transform,
integrated by scaling and squaring.

The network's features are pooled onto a ``K x ... x K`` grid and a 1x1 head gives a coarse velocity there
(voxels of the full grid); its discrete Fourier transform is the ``K^n`` lowest-frequency coefficients.
Zero-padding that spectrum to the image size (:func:`band_limited_field`) gives the band-limited velocity,
i.e. the trigonometric interpolation of the coarse one. (A first version read each Fourier coefficient from
the pooled feature at the same INDEX, so the frequency-0 coefficient came from the top-left corner block; it
did not learn: validation Dice 0.506 -> 0.506.)
Fields are ``(B, n, *S)`` voxels of the fixed grid, fixed -> moving.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.svf import integrate_svf


@dataclass(frozen=True)
class DeepFLASHConfig:
    widths: tuple[int, ...] = param((16, 32, 32, 32), "Feature network channels per level, finest first.")
    features: int = param(16, "Feature channels pooled onto the frequency grid.", range=(2, 128))
    frequencies: int = param(16, "Fourier coefficients kept per axis (even; the band limit).", range=(2, 64))
    int_steps: int = param(7, "Scaling-and-squaring steps.", range=(1, 12))


def band_limited_field(coeffs: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Real field ``(B, n, *shape)`` from low-frequency Fourier coefficients ``(B, 2n, K, ..., K)``
    (real parts, then imaginary parts; frequency ``k`` in ``[-K/2, K/2)`` per axis, in cycles per image).

    The coefficients are amplitudes (``ifftn(..., norm="forward")``), so a constant field of value ``c`` is
    the single coefficient ``c`` at frequency 0."""
    n = len(shape)
    k = coeffs.shape[-1]
    spectrum = torch.zeros((coeffs.shape[0], n, *shape), dtype=torch.complex64, device=coeffs.device)
    index = [torch.fft.fftfreq(k, 1.0 / k, device=coeffs.device).long() % s for s in shape]
    grids = torch.meshgrid(*index, indexing="ij")
    spectrum[(slice(None), slice(None), *grids)] = torch.complex(coeffs[:, :n].float(), coeffs[:, n:].float())
    return torch.fft.ifftn(spectrum, dim=tuple(range(2, 2 + n)), norm="forward").real


@register_family
class DeepFLASH(LearnedFamily):
    name = "deepflash"
    title = "DeepFLASH (band-limited velocity)"
    paper = "Wang & Zhang, DeepFLASH: an efficient network for learning-based medical image registration, CVPR 2020"
    summary = (
        "Smooth deformations need only a few slow waves to describe them. This network outputs just "
        "the lowest Fourier frequencies of a velocity field (16 per axis instead of one value per "
        "voxel); the inverse Fourier transform turns them into a smooth velocity, which is then "
        "integrated into a diffeomorphism. Fewer outputs mean a smaller, faster prediction."
    )
    supervision = Supervision.UNSUPERVISED
    Config = DeepFLASHConfig

    def build(self, dims: int, config: DeepFLASHConfig) -> nn.ModuleDict:
        head = (nn.Conv2d if dims == 2 else nn.Conv3d)(config.features, dims, 1)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return nn.ModuleDict(
            {"features": ConvUNet(dims, out_channels=config.features, widths=config.widths), "head": head}
        )

    def divisor(self, dims: int, config: DeepFLASHConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: DeepFLASHConfig, settings=None
    ) -> Prediction:
        n = moving.ndim - 2
        pool = nn.functional.adaptive_avg_pool2d if n == 2 else nn.functional.adaptive_avg_pool3d
        features = nets["features"](torch.cat([moving, fixed], 1))
        coarse = nets["head"](pool(features, (config.frequencies,) * n))  # (B, n, K, ..., K) voxels
        spectrum = torch.fft.fftn(coarse.float(), dim=tuple(range(2, 2 + n)), norm="forward")
        coeffs = torch.cat([spectrum.real, spectrum.imag], 1)
        v = band_limited_field(coeffs, tuple(fixed.shape[2:]))
        return Prediction(
            displacement=integrate_svf(v, steps=config.int_steps),
            velocity=v,
            extras={"fourier_coefficients": coeffs},
        )
