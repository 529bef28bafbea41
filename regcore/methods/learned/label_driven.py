"""Weakly supervised, label-driven multimodal registration (Hu et al., MedIA 2018).

A U-Net looks at the moving (e.g. MR) and fixed (e.g. transrectal ultrasound) image stacked together and
predicts a dense field (optionally a stationary velocity integrated by scaling and squaring, so the
map cannot fold). Training never compares the two images' intensities: the only image term is the
overlap of corresponding *labels* (prostate gland and small landmark regions) after warping, as a
multi-scale soft Dice (both label maps Gaussian-smoothed at several scales, so small or distant
structures still give a gradient), plus a bending-energy (or diffusion) regulariser. At inference
the labels are not needed: one forward pass on the two images.

Training on the real MR/TRUS cases (``regcore.data.prostate``) needs centre alignment, per-structure
soft label maps and independent random affines of the two images, which the generic engine's data
sources do not express; :mod:`regcore.methods.learned._label_driven_train` runs that loop and saves
a checkpoint in the engine's format. With the engine (``regcore train``, ``supervision = weak``) the
family trains on integer label maps through :meth:`LabelDriven.losses` as well.

Default weights: ``assets/models/label_driven3d.pt`` (6 prostate cases; case000004 and case000007 held
out). Conventions: images ``(B, 1, *S)`` in [0, 1] on the model grid; displacement ``(B, n, *S)``
in voxels of the fixed grid, fixed -> moving (``warped = moving o (id + u)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.losses import make_regularizer, one_hot
from regcore.methods.learned.family import (
    LearnedFamily,
    Prediction,
    StepContext,
    dense_prediction,
    register_family,
)
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.smooth import gaussian_smooth
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class LabelDrivenConfig:
    widths: tuple[int, ...] = param(
        (8, 16, 32),
        "U-Net channels per level, finest first (one 2x down-sampling per extra level).",
        range=(1, 512),
    )
    diffeomorphic: bool = param(True, "Predict a stationary velocity integrated by scaling and squaring.")
    int_steps: int = param(5, "Scaling-and-squaring steps when diffeomorphic.", range=(1, 12))
    dice_sigmas: tuple[float, ...] = param(
        (0.0, 1.0, 2.0, 4.0),
        "Gaussian sigmas (model voxels) of the multi-scale soft Dice; 0 = the label maps as they are.",
        range=(0.0, 64.0),
    )
    regularizer: str = param(
        "bending", "Smoothness penalty of the displacement.", choices=("bending", "diffusion")
    )


def multiscale_dice_loss(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    displacement: torch.Tensor,
    sigmas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0),
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 - mean soft Dice`` of fixed vs warped moving label maps, over scales, batch items and structures.

    Hu et al.'s multi-scale Dice: both maps are Gaussian-smoothed at each sigma, so wide kernels give
    overlap gradients for far-apart structures. Soft Dice ``2 sum(f w) / (sum(f^2) + sum(w^2))`` (1 exactly
    when the smoothed maps agree, also for soft maps). The moving maps are smoothed *before* warping
    (smoothing commutes with a locally rigid warp), which keeps the smoothing out of autograd.

    Args:
        fixed, moving: soft label maps ``(B, L, *S)`` in [0, 1], one channel per structure (no
            background channel), on the fixed grid.
        displacement: ``(B, n, *S)`` voxels, fixed -> moving; moving maps are warped by it (linear,
            zeros outside).
        sigmas: Gaussian sigmas in voxels (0 = the maps as they are).
        present: ``(B, L)`` bool, structures that exist in both images (default: every channel
            with mass in ``fixed``).
    Returns:
        scalar loss in [0, 1]; 0 for identical maps and a zero displacement. Differentiable in ``displacement``.
    """
    if fixed.shape != moving.shape or fixed.ndim not in (4, 5):
        raise ValueError(
            f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must be equal (B, L, *S) 2D/3D maps"
        )
    if not sigmas:
        raise ValueError("sigmas must name at least one scale")
    dims = tuple(range(2, fixed.ndim))
    mask = fixed.sum(dims) > 0 if present is None else present.bool()
    if not bool(mask.any()):
        return displacement.sum() * 0.0
    with torch.no_grad():
        fs = torch.cat([gaussian_smooth(fixed.float(), float(s)) for s in sigmas], 1)
        ms = torch.cat([gaussian_smooth(moving.float(), float(s)) for s in sigmas], 1)
    ws = warp(ms, displacement, mode="bilinear", padding_mode="zeros")  # one warp for every scale
    dice = 2.0 * (fs * ws).sum(dims) / ((fs * fs).sum(dims) + (ws * ws).sum(dims)).clamp_min(1e-6)
    return 1.0 - dice[mask.repeat(1, len(sigmas))].mean()


def integer_labels_to_maps(fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer label maps ``(B, 1, *S)`` (same codes = same structure) -> one channel per non-zero code
    ``(B, L, *S)`` float each, for :func:`multiscale_dice_loss` (the engine's weak-supervision batches)."""
    values, codes = torch.unique(torch.cat([fixed, moving], 1).long(), return_inverse=True)
    if values[0] != 0:
        codes = codes + 1
    k = max(int(codes.max()) + 1, 2)
    return one_hot(codes[:, :1], k)[:, 1:], one_hot(codes[:, 1:], k)[:, 1:]


@register_family
class LabelDriven(LearnedFamily):
    name = "label_driven"
    title = "Label-driven (weakly supervised, multimodal)"
    paper = (
        "Hu et al., Weakly-supervised convolutional neural networks for multimodal image registration, "
        "MedIA 2018"
    )
    summary = (
        "For images of different kinds, such as MR and ultrasound, intensities are hard to compare. "
        "This network is trained only with outlines of the same structures in both images (the "
        "prostate gland and a few small landmarks): it learns to move the MR so that its outlines "
        "land on the ultrasound outlines, compared at several blur levels, with a smoothness "
        "penalty. Registering a new pair needs no outlines: one pass through the network."
    )
    supervision = Supervision.WEAK
    Config = LabelDrivenConfig

    def build(self, dims: int, config: LabelDrivenConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"net": ConvUNet(dims, in_channels=2, widths=tuple(config.widths))})

    def divisor(self, dims: int, config: LabelDrivenConfig) -> int:
        return ConvUNet.divisor_for(tuple(config.widths))

    def recipe(self, dims: int) -> dict:
        """Prostate MR/TRUS at 1.6 mm: the 44x59x41 TRUS grid (0.4 mm) becomes 11x15x10, padded to 12x16x12."""
        if dims == 3:
            return {"spacing_mm": 1.6, "train_shape": (12, 16, 12)}
        return {"spacing_mm": 2.0, "train_shape": (96, 112)}

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: LabelDrivenConfig, settings=None
    ) -> Prediction:
        field = nets["net"](torch.cat([moving, fixed], 1))
        return dense_prediction(field, config.diffeomorphic, config.int_steps)

    def losses(self, nets, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Label terms only: ``dice`` (multi-scale soft Dice of warped moving label maps vs the fixed ones)
        and ``regularizer`` (bending or diffusion energy of the displacement).

        ``batch``: ``moving``/``fixed`` ``(B, 1, *S)``; either soft per-structure maps ``moving_maps``/
        ``fixed_maps`` ``(B, L, *S)`` with ``present`` ``(B, L)``, or integer ``moving_labels``/
        ``fixed_labels`` ``(B, 1, *S)`` (the engine's batches). Intensity similarity is never used.
        """
        cfg: LabelDrivenConfig = ctx.family_config
        pred = self.predict(nets, batch["moving"], batch["fixed"], cfg)
        u = pred.displacement.float()
        if "fixed_maps" in batch:
            fixed_maps, moving_maps = batch["fixed_maps"], batch["moving_maps"]
            present = batch.get("present")
        elif "fixed_labels" in batch:
            fixed_maps, moving_maps = integer_labels_to_maps(batch["fixed_labels"], batch["moving_labels"])
            present = None
        else:
            raise ValueError(
                "label_driven training needs label maps: batch has no 'fixed_maps' or 'fixed_labels'"
            )
        dice = multiscale_dice_loss(
            fixed_maps.float(), moving_maps.float(), u, tuple(cfg.dice_sigmas), present
        )
        reg = make_regularizer(cfg.regularizer)(u)
        total = ctx.config.dice_weight * dice + ctx.config.regularizer_weight * reg
        return {"dice": dice, "regularizer": reg, "total": total}
