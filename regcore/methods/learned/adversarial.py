"""Adversarial registration (Fan et al., "Adversarial learning for mono- or multi-modal registration",
MedIA 2019): a registration U-Net (the generator) is trained against a discriminator that judges whether
a (fixed, image) pair is well aligned; the discriminator is the generator's learned similarity.

Positives ("well aligned" pairs) follow the paper's mono-modal reference: ``(fixed, r)`` with
``r = alpha * fixed + (1 - alpha) * warped`` (warped detached). The reference keeps the moving subject's
own appearance, so the discriminator cannot win by spotting "the same subject" (no warp can make two
subjects identical); what separates ``r`` from ``warped`` is only ``alpha * (fixed - warped)``, the
misalignment itself, and positives and negatives coincide exactly when ``warped`` matches ``fixed``.
Negatives are ``(fixed, warped)``. The hybrid generator loss adds the intensity similarity of the recipe
(LNCC by default) weighted by ``lncc_weight``; ``lncc_weight = 0`` trains on the adversarial signal alone.

Shapes: images ``(B, 1, *S)`` in [0, 1]; displacement ``(B, n, *S)`` voxels of the fixed grid, fixed ->
moving (``warped = moving o (id + u)``); the discriminator returns patch logits ``(B, 1, *S / 2^k)``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import (
    LearnedFamily,
    NonFiniteLoss,
    Prediction,
    StepContext,
    dense_prediction,
    register_family,
)
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class AdversarialConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32, 32), "Channels per level of the generator U-Net, finest first."
    )
    disc_widths: tuple[int, ...] = param(
        (16, 32, 64),
        "Channels of the discriminator's stride-2 convolutions; k entries give one score per 2^k-voxel patch.",
    )
    adversarial_weight: float = param(
        0.1, "Weight of the adversarial term (the discriminator as the similarity).", range=(0.0, 100.0)
    )
    lncc_weight: float = param(
        1.0,
        "Weight of the intensity similarity (the recipe's similarity, LNCC by default; it replaces the "
        "recipe's similarity_weight); 0 = adversarial only.",
        range=(0.0, 100.0),
    )
    blend_alpha: float = param(
        0.3,
        "Positive reference = alpha * fixed + (1 - alpha) * warped: how far the 'well aligned' example "
        "is pulled toward the fixed image.",
        range=(0.01, 1.0),
    )
    disc_lr_ratio: float = param(
        1.0, "Discriminator learning rate = this x the recipe's lr.", range=(0.01, 100.0), advanced=True
    )
    diffeomorphic: bool = param(False, "Predict a stationary velocity integrated by scaling and squaring.")
    int_steps: int = param(7, "Scaling-and-squaring steps when diffeomorphic.", range=(1, 12), advanced=True)


class PairDiscriminator(nn.Module):
    """Patch discriminator: ``(fixed, image)`` stacked ``(B, 2, *S)`` -> alignment logits ``(B, 1, *S')``.

    ``len(widths)`` stride-2 3^n convolutions with LeakyReLU, then a 3^n convolution to one channel, so
    each output scores one patch (receptive field ~ 2^(k+1) + 1 voxels); higher = better aligned.
    """

    def __init__(self, dims: int, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if not widths:
            raise ValueError("disc_widths needs at least one entry, got ()")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        cin = 2
        for w in widths:
            layers += [conv(cin, w, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin = w
        layers.append(conv(cin, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, fixed: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([fixed, image], 1))


def score_map(logits: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Patch logits ``(B, 1, *S')`` -> probabilities of "well aligned" ``(B, 1, *shape)`` (linear upsampling)."""
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(torch.sigmoid(logits.float()), size=shape, mode=mode, align_corners=False)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def _check_pair(moving: Any, fixed: Any) -> None:
    for name, x in (("moving", moving), ("fixed", fixed)):
        if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5) or x.shape[1] != 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (B, 1, *S) tensor with 2 or 3 spatial axes, got {got}")
    if moving.shape != fixed.shape:
        raise ValueError(
            f"moving and fixed must have the same shape, got {tuple(moving.shape)} and {tuple(fixed.shape)}"
        )


@register_family
class Adversarial(LearnedFamily):
    name = "adversarial"
    title = "Adversarial registration (GAN)"
    paper = "Fan et al., Adversarial learning for mono- or multi-modal registration, MedIA 2019"
    summary = (
        "Two networks play a game. A registration U-Net warps the moving image; a second network, the "
        "discriminator, looks at the fixed image next to an image and scores, patch by patch, how well the "
        "two are aligned. The discriminator learns from well-aligned examples (the warped image blended "
        "toward the fixed one) and from the current warped image, and the registration network learns to "
        "fool it, so the discriminator acts as a learned similarity, here mixed with LNCC. The Train page "
        "charts both losses and the scores of real and warped pairs; Register shows the score map."
    )
    supervision = Supervision.UNSUPERVISED
    Config = AdversarialConfig

    def build(self, dims: int, config: AdversarialConfig) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "generator": ConvUNet(dims, widths=config.widths),
                "discriminator": PairDiscriminator(dims, config.disc_widths),
            }
        )

    def divisor(self, dims: int, config: AdversarialConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def optimizers(self, nets: nn.ModuleDict, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Adam for the generator; Adam with beta1 = 0.5 (usual for GANs) for the discriminator. The
        discriminator's rate is scaled by ``disc_lr_ratio`` in :meth:`train_step` (optimizers() has no config)."""
        return {
            "generator": torch.optim.Adam(nets["generator"].parameters(), lr=lr),
            "discriminator": torch.optim.Adam(nets["discriminator"].parameters(), lr=lr, betas=(0.5, 0.999)),
        }

    # -- forward pieces ---------------------------------------------------------------------------
    def _field(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: AdversarialConfig
    ) -> Prediction:
        return dense_prediction(
            nets["generator"](torch.cat([moving, fixed], 1)), config.diffeomorphic, config.int_steps
        )

    def _discriminator_terms(
        self, nets, fixed: torch.Tensor, warped: torch.Tensor, alpha: float
    ) -> dict[str, torch.Tensor]:
        """Discriminator loss on positives ``(fixed, alpha fixed + (1-alpha) warped)`` and negatives
        ``(fixed, warped)`` (``warped`` detached), and its mean probability of "aligned" for each."""
        warped = warped.detach()
        real = nets["discriminator"](fixed, alpha * fixed + (1.0 - alpha) * warped)
        fake = nets["discriminator"](fixed, warped)
        return {
            "discriminator": 0.5 * (_bce(real, 1.0) + _bce(fake, 0.0)),
            "score_real": torch.sigmoid(real.float()).mean(),
            "score_warped": torch.sigmoid(fake.float()).mean(),
        }

    def _generator_terms(
        self, nets, batch: dict[str, torch.Tensor], ctx: StepContext, pred: Prediction, warped: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The recipe's registration terms (similarity weighted by ``lncc_weight``) + the adversarial term
        (non-saturating: -log D(fixed, warped)); ``generator`` = ``total`` = their weighted sum."""
        from regcore.train.objectives import registration_losses

        cfg = ctx.family_config
        recipe = ctx.config
        if recipe.similarity_weight != cfg.lncc_weight:
            recipe = replace(recipe, similarity_weight=cfg.lncc_weight)
        terms = registration_losses(recipe, pred, batch, ctx.similarity)
        terms["adversarial"] = _bce(nets["discriminator"](batch["fixed"], warped), 1.0)
        terms["generator"] = terms.pop("total") + cfg.adversarial_weight * terms["adversarial"]
        terms["total"] = terms["generator"]
        return terms

    # -- training ---------------------------------------------------------------------------------
    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Every term for one batch without stepping: generator terms (``total`` = generator loss) and the
        discriminator's loss and scores (used for validation)."""
        pred = self._field(nets, batch["moving"], batch["fixed"], ctx.family_config)
        warped = warp(batch["moving"], pred.displacement)
        terms = self._generator_terms(nets, batch, ctx, pred, warped)
        terms.update(self._discriminator_terms(nets, batch["fixed"], warped, ctx.family_config.blend_alpha))
        return terms

    def train_step(self, nets, optimizers, batch, ctx: StepContext) -> dict[str, float]:
        """One discriminator step on the current warped images, then one generator step against the updated
        discriminator. Returns generator/discriminator losses, their parts and the two mean scores."""
        cfg = ctx.family_config
        amp = ctx.autocast if ctx.autocast else nullcontext
        disc_opt = optimizers["discriminator"]
        for group in disc_opt.param_groups:
            group["lr"] = ctx.config.lr * cfg.disc_lr_ratio
        fixed = batch["fixed"]
        with amp():
            pred = self._field(nets, batch["moving"], fixed, cfg)
            warped = warp(batch["moving"], pred.displacement)
            d_terms = self._discriminator_terms(nets, fixed, warped, cfg.blend_alpha)
        self._step(d_terms["discriminator"], disc_opt, ctx, "discriminator")
        nets["discriminator"].requires_grad_(False)  # the generator step leaves the discriminator alone
        try:
            with amp():
                g_terms = self._generator_terms(nets, batch, ctx, pred, warped)
            self._step(g_terms["total"], optimizers["generator"], ctx, "generator")
        finally:
            nets["discriminator"].requires_grad_(True)
        if ctx.scaler is not None:
            ctx.scaler.update()
        return {k: float(v.detach()) for k, v in {**g_terms, **d_terms}.items()}

    @staticmethod
    def _step(loss: torch.Tensor, opt: torch.optim.Optimizer, ctx: StepContext, name: str) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"{name} loss became {float(loss.detach())} at step {ctx.step + 1}")
        opt.zero_grad(set_to_none=True)
        if ctx.scaler is not None:
            ctx.scaler.scale(loss).backward()
            ctx.scaler.step(opt)
        else:
            loss.backward()
            opt.step()

    # -- inference --------------------------------------------------------------------------------
    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: AdversarialConfig, settings=None
    ) -> Prediction:
        """The generator's field, plus the discriminator's view of the pair: ``extras["maps"]`` holds the
        per-patch probability of "aligned" ``(1, 1, *S)`` for (fixed, warped) and for (fixed, moving) before
        registration (first pair of the batch); the scalars are their means over the batch."""
        _check_pair(moving, fixed)
        pred = self._field(nets, moving, fixed, config)
        warped = warp(moving, pred.displacement)
        shape = tuple(fixed.shape[2:])
        after = score_map(nets["discriminator"](fixed, warped), shape).detach()
        before = score_map(nets["discriminator"](fixed, moving), shape).detach()
        pred.extras = {
            "maps": {"discriminator_score": after[:1].cpu(), "discriminator_score_before": before[:1].cpu()},
            "discriminator_score": float(after.mean()),
            "discriminator_score_before": float(before.mean()),
        }
        return pred
