"""Probabilistic diffeomorphic VoxelMorph (Dalca et al., MICCAI 2018 / MedIA 2019): the network predicts
the mean and log-variance of a stationary velocity field; training samples a velocity and adds a KL
term to a smoothness prior; at registration, sampling gives a per-voxel uncertainty map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import (
    LearnedFamily,
    LearnedSettings,
    Prediction,
    StepContext,
    register_family,
)
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.svf import integrate_svf


@dataclass(frozen=True)
class ProbVoxelMorphConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32, 32), "U-Net channels per level, finest first.", range=(1, 512)
    )
    int_steps: int = param(7, "Scaling-and-squaring steps.", range=(1, 12))
    prior_lambda: float = param(
        10.0, "Precision of the smoothness prior on the velocity (larger = smoother).", range=(0.01, 1000.0)
    )
    kl_weight: float = param(0.01, "Weight of the KL term in the training loss.", range=(0.0, 10.0))


@dataclass(frozen=True)
class ProbVoxelMorphSettings(LearnedSettings):
    samples: int = param(8, "Velocity samples drawn for the uncertainty map (0 = mean only).", range=(0, 64))


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor, prior_lambda: float) -> torch.Tensor:
    """KL(q || p) per voxel (up to a constant) of a diagonal Gaussian velocity ``q = N(mean, exp(log_var))``
    against the Laplacian smoothness prior ``p`` with precision ``prior_lambda * L`` (Dalca et al.):
    ``0.5 * [lambda * 2n * var - log var] + lambda * sum_axes mean((d_i mean)^2)``. Shapes ``(B, n, *S)``."""
    n = mean.ndim - 2
    sigma_term = 0.5 * (prior_lambda * 2 * n * log_var.exp() - log_var).mean()
    smooth = sum((mean.diff(dim=2 + a) ** 2).mean() for a in range(n))
    return sigma_term + prior_lambda * smooth


@register_family
class ProbVoxelMorph(LearnedFamily):
    name = "prob_voxelmorph"
    title = "Probabilistic diffeomorphic VoxelMorph"
    summary = (
        "The network does not give one answer but a range of them: for every voxel a mean velocity and "
        "how unsure it is (a variance). Training draws random velocities from that range and asks them "
        "to align the pair, while a prior keeps the range honest and the field smooth. At registration "
        "we draw several fields; where they disagree, the registration is uncertain."
    )
    paper = "Dalca et al., Unsupervised learning of probabilistic diffeomorphic registration, MedIA 2019"
    supervision = Supervision.UNSUPERVISED
    Config = ProbVoxelMorphConfig
    crop_training = True
    Settings = ProbVoxelMorphSettings

    def build(self, dims: int, config: ProbVoxelMorphConfig) -> nn.ModuleDict:
        net = ConvUNet(dims, out_channels=2 * dims, widths=config.widths)
        with torch.no_grad():  # start with small variances (log var = -6)
            net.head.bias[dims:] = -6.0
        return nn.ModuleDict({"net": net})

    def divisor(self, dims: int, config: ProbVoxelMorphConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def recipe(self, dims: int) -> dict:
        return {**super().recipe(dims), "regularizer_weight": 0.0}

    def moments(self, nets, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity mean and log-variance, each ``(B, n, *S)`` voxels (voxels^2)."""
        out = nets["net"](torch.cat([moving, fixed], 1))
        n = moving.ndim - 2
        return out[:, :n], out[:, n:].clamp(-20.0, 5.0)

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        from regcore.train.objectives import registration_losses

        cfg = ctx.family_config
        mean, log_var = self.moments(nets, batch["moving"], batch["fixed"])
        v = mean + (0.5 * log_var).exp() * torch.randn_like(mean) if nets.training else mean
        pred = Prediction(displacement=integrate_svf(v, steps=cfg.int_steps), velocity=v)
        terms = registration_losses(ctx.config, pred, batch, ctx.similarity)
        terms["kl"] = kl_divergence(mean, log_var, cfg.prior_lambda)
        terms["total"] = terms["total"] + cfg.kl_weight * terms["kl"]
        return terms

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: ProbVoxelMorphConfig, settings=None
    ) -> Prediction:
        mean, log_var = self.moments(nets, moving, fixed)
        u = integrate_svf(mean, steps=config.int_steps)
        k = getattr(settings, "samples", 0) if settings is not None else 0
        if not k:
            return Prediction(displacement=u, velocity=mean, extras={"velocity_log_var": log_var})
        std = (0.5 * log_var).exp()
        samples = torch.stack(
            [integrate_svf(mean + std * torch.randn_like(mean), steps=config.int_steps) for _ in range(k)]
        )
        return Prediction(displacement=u, velocity=mean, samples=samples, variance=samples.var(0))
