"""HyperMorph (Hoopes et al., MELBA 2022): one network conditioned on the regularisation weight, so a
single model covers the whole accuracy-smoothness trade-off and the weight can be chosen after training.
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
    dense_prediction,
    register_family,
)
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet


@dataclass(frozen=True)
class HyperMorphConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32, 32), "U-Net channels per level, finest first.", range=(1, 512)
    )
    max_regularization: float = param(
        10.0, "Regulariser weight at lambda = 1 (lambda scales it from 0).", range=(0.01, 1000.0)
    )
    diffeomorphic: bool = param(False, "Predict a stationary velocity integrated by scaling and squaring.")
    int_steps: int = param(7, "Scaling-and-squaring steps when diffeomorphic.", range=(1, 12))


@dataclass(frozen=True)
class HyperMorphSettings(LearnedSettings):
    regularization: float = param(
        0.3, "Lambda in [0, 1]: 0 = image match only, 1 = smoothest field.", range=(0.0, 1.0), step=0.05
    )


@register_family
class HyperMorph(LearnedFamily):
    name = "hypermorph"
    title = "HyperMorph (regularisation-conditioned)"
    summary = (
        "Usually the smoothness weight is fixed before training and a new network is trained for every "
        "value. HyperMorph gives the weight to the network as an input: during training it sees many "
        "weights, and a small side network adjusts every layer for the one it is given. Afterwards a "
        "slider picks the trade-off between matching the images and keeping the field smooth, with no "
        "retraining."
    )
    paper = "Hoopes et al., Learning the effect of registration hyperparameters with HyperMorph, MELBA 2022"
    supervision = Supervision.UNSUPERVISED
    Config = HyperMorphConfig
    Settings = HyperMorphSettings

    def build(self, dims: int, config: HyperMorphConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"net": ConvUNet(dims, widths=config.widths, condition_dim=1)})

    def divisor(self, dims: int, config: HyperMorphConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def field(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: HyperMorphConfig, lam: torch.Tensor
    ) -> Prediction:
        """Prediction for lambda values ``(B, 1)`` in [0, 1]."""
        out = nets["net"](torch.cat([moving, fixed], 1), lam)
        return dense_prediction(out, config.diffeomorphic, config.int_steps)

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """``(1 - lambda) * image terms + lambda * max_regularization * regulariser``, lambda ~ U(0, 1) per batch
        while training (0.3 for validation)."""
        from regcore.train.objectives import registration_losses

        cfg = ctx.family_config
        b = batch["moving"].shape[0]
        lam = torch.rand(1).item() if nets.training else 0.3
        pred = self.field(
            nets, batch["moving"], batch["fixed"], cfg, torch.full((b, 1), lam, device=batch["moving"].device)
        )
        terms = registration_losses(ctx.config, pred, batch, ctx.similarity)
        reg = terms.pop("regularizer")
        image = terms.pop("total") - ctx.config.regularizer_weight * reg
        terms["regularizer"] = reg
        terms["total"] = (1 - lam) * image + lam * cfg.max_regularization * reg
        return terms

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: HyperMorphConfig, settings=None
    ) -> Prediction:
        lam = float(getattr(settings, "regularization", 0.3)) if settings is not None else 0.3
        return self.field(
            nets, moving, fixed, config, torch.full((moving.shape[0], 1), lam, device=moving.device)
        )
