"""LapIRN (Mok & Chung, MICCAI 2020): a three-level Laplacian pyramid of networks. The coarsest network
registers quarter-resolution images; each finer one sees the moving image warped by the field so far
(and that field) and adds a residual diffeomorphic correction. Training is staged: the coarse level
first, then the next level joins, then the finest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, StepContext, register_family
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.nets.spatial_ops import resize_field
from regcore.spatial.compose import compose
from regcore.spatial.svf import integrate_svf
from regcore.spatial.warp import warp

LEVELS = 3


@dataclass(frozen=True)
class LapIRNConfig:
    widths: tuple[int, ...] = param((16, 32, 32), "Channels per level of each level's U-Net, finest first.")
    stage_steps: tuple[int, ...] = param(
        (200, 200),
        "Training steps with only the coarsest level, then with the "
        "two coarsest; all three levels train after that.",
    )
    int_steps: int = param(7, "Scaling-and-squaring steps of each level's residual velocity.", range=(1, 12))


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``(B, C, *S)`` by ``factor`` along every spatial axis (sizes divisible by it)."""
    if factor == 1:
        return x
    pool = nn.functional.avg_pool2d if x.ndim == 4 else nn.functional.avg_pool3d
    return pool(x, factor)


def downsample_batch(batch: dict[str, torch.Tensor], factor: int) -> dict[str, torch.Tensor]:
    """A training batch at ``1/factor`` resolution: images averaged, labels nearest, fields resized."""
    if factor == 1:
        return batch
    out = dict(batch)
    out["moving"], out["fixed"] = downsample(batch["moving"], factor), downsample(batch["fixed"], factor)
    shape = tuple(out["fixed"].shape[2:])
    for key in ("moving_labels", "fixed_labels"):
        out[key] = nn.functional.interpolate(batch[key].float(), size=shape, mode="nearest").long()
    out["true_displacement"] = resize_field(batch["true_displacement"], shape)
    return out


@register_family
class LapIRN(LearnedFamily):
    name = "lapirn"
    title = "LapIRN (Laplacian pyramid)"
    paper = "Mok & Chung, Large deformation diffeomorphic image registration with Laplacian pyramid networks, MICCAI 2020"
    summary = (
        "Large motions are easier to see in small, blurred images. LapIRN first registers quarter-size "
        "images, then half-size ones after applying that first estimate, then full-size ones, each "
        "level adding a small smooth correction (a diffeomorphism, so nothing folds). The levels are "
        "trained one after another, coarse to fine. The Mechanism view of Evaluate steps through the levels."
    )
    supervision = Supervision.UNSUPERVISED
    Config = LapIRNConfig
    crop_training = True

    def build(self, dims: int, config: LapIRNConfig) -> nn.ModuleDict:
        nets = {"level1": ConvUNet(dims, in_channels=2, widths=config.widths)}
        for level in range(2, LEVELS + 1):
            nets[f"level{level}"] = ConvUNet(dims, in_channels=2 + dims, widths=config.widths)
        return nn.ModuleDict(nets)

    def divisor(self, dims: int, config: LapIRNConfig) -> int:
        return 2 ** (LEVELS - 1) * ConvUNet.divisor_for(config.widths)

    def active_levels(self, config: LapIRNConfig, step: int | None) -> int:
        """Levels trained at global ``step`` (all of them at inference, ``step=None``)."""
        if step is None:
            return LEVELS
        bounds = list(config.stage_steps) + [float("inf")]
        total: float = 0
        for level, steps in enumerate(bounds, start=1):
            total += steps
            if step < total:
                return min(level, LEVELS)
        return LEVELS

    def pyramid(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: LapIRNConfig, levels: int = LEVELS
    ) -> list[torch.Tensor]:
        """Displacement after each of the first ``levels`` levels, each at its own resolution (coarse first)."""
        fields: list[torch.Tensor] = []
        u = None
        for level in range(1, levels + 1):
            factor = 2 ** (LEVELS - level)
            m, f = downsample(moving, factor), downsample(fixed, factor)
            if u is None:
                v = nets["level1"](torch.cat([m, f], 1))
                u = integrate_svf(v, steps=config.int_steps)
            else:
                u = resize_field(u, tuple(f.shape[2:]))
                v = nets[f"level{level}"](torch.cat([warp(m, u), f, u], 1))
                u = compose(u, integrate_svf(v, steps=config.int_steps))  # moving o phi_u o phi_residual
            fields.append(u)
        return fields

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """The default registration loss at the resolution of the finest level trained at this step."""
        from regcore.train.objectives import registration_losses

        levels = self.active_levels(ctx.family_config, ctx.step if nets.training else None)
        u = self.pyramid(nets, batch["moving"], batch["fixed"], ctx.family_config, levels)[-1]
        terms = registration_losses(
            ctx.config,
            Prediction(displacement=u),
            downsample_batch(batch, 2 ** (LEVELS - levels)),
            ctx.similarity,
        )
        terms["levels"] = torch.tensor(float(levels))
        return terms

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: LapIRNConfig, settings=None
    ) -> Prediction:
        fields = self.pyramid(nets, moving, fixed, config)
        full = tuple(fixed.shape[2:])
        levels = [torch.zeros_like(fields[-1])] + [
            resize_field(u, full) for u in fields
        ]  # identity, then each level
        return Prediction(
            displacement=fields[-1], trajectory=levels, extras={"level_displacements": fields[:-1]}
        )
