"""CycleMorph (Kim et al., MedIA 2021): two networks register in opposite directions; a cycle loss asks
that warping there and back returns the original image, and an identity loss that a pair of identical
images gives no motion. The result is more inverse-consistent and folds less.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, StepContext, register_family
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.compose import inverse_consistency_error, invert
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class CycleMorphConfig:
    widths: tuple[int, ...] = param((16, 32, 32, 32), "Channels per level of each U-Net, finest first.")
    cycle_weight: float = param(
        0.1, "Weight of the cycle loss (L1 between the image and its round trip).", range=(0.0, 100.0)
    )
    identity_weight: float = param(
        0.5, "Weight of the identity loss (mean squared field for identical inputs).", range=(0.0, 100.0)
    )


def _swap(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch with fixed and moving exchanged; a known true field is replaced by its inverse."""
    out = dict(
        batch,
        moving=batch["fixed"],
        fixed=batch["moving"],
        moving_labels=batch["fixed_labels"],
        fixed_labels=batch["moving_labels"],
    )
    if bool(batch["has_true"].any()):
        out["true_displacement"] = invert(batch["true_displacement"])
    return out


@register_family
class CycleMorph(LearnedFamily):
    name = "cyclemorph"
    title = "CycleMorph (cycle-consistent pair of networks)"
    paper = "Kim et al., CycleMorph: cycle consistent unsupervised deformable image registration, MedIA 2021"
    summary = (
        "Two networks are trained together: one registers the moving image to the fixed one, the "
        "other the fixed to the moving. Warping an image there and back should give it back "
        "unchanged (the cycle loss), and registering an image to itself should not move anything "
        "(the identity loss). Both push the two directions to be each other's inverse, which also "
        "discourages folding. The Evaluate table reports the inverse-consistency error."
    )
    supervision = Supervision.UNSUPERVISED
    Config = CycleMorphConfig

    def build(self, dims: int, config: CycleMorphConfig) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "moving_to_fixed": ConvUNet(dims, widths=config.widths),
                "fixed_to_moving": ConvUNet(dims, widths=config.widths),
            }
        )

    def divisor(self, dims: int, config: CycleMorphConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def fields(self, nets, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u_forward, u_backward)``: fixed -> moving and moving -> fixed displacements ``(B, n, *S)``."""
        return (
            nets["moving_to_fixed"](torch.cat([moving, fixed], 1)),
            nets["fixed_to_moving"](torch.cat([fixed, moving], 1)),
        )

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        from regcore.train.objectives import registration_losses

        cfg = ctx.family_config
        m, f = batch["moving"], batch["fixed"]
        u_fw, u_bw = self.fields(nets, m, f)
        fw = registration_losses(ctx.config, Prediction(displacement=u_fw), batch, ctx.similarity)
        bw = registration_losses(ctx.config, Prediction(displacement=u_bw), _swap(batch), ctx.similarity)
        cycle = (warp(warp(m, u_fw), u_bw) - m).abs().mean() + (warp(warp(f, u_bw), u_fw) - f).abs().mean()
        identity = (
            nets["moving_to_fixed"](torch.cat([f, f], 1)).pow(2).mean()
            + nets["fixed_to_moving"](torch.cat([m, m], 1)).pow(2).mean()
        )
        terms = {f"{k}": v for k, v in fw.items() if k != "total"}
        terms.update(backward=bw["total"], cycle=cycle, identity=identity)
        terms["total"] = fw["total"] + bw["total"] + cfg.cycle_weight * cycle + cfg.identity_weight * identity
        return terms

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: CycleMorphConfig, settings=None
    ) -> Prediction:
        u_fw, u_bw = self.fields(nets, moving, fixed)
        return Prediction(
            displacement=u_fw,
            extras={
                "backward_displacement": u_bw,
                "inverse_consistency_error_vox": float(inverse_consistency_error(u_fw, u_bw).detach().mean()),
            },
        )
