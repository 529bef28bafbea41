"""CoMIR: contrastive multimodal image representations for registration (Pielawski et al., NeurIPS 2020).

Two U-Nets, one per image role (``fixed_encoder`` for the fixed modality, e.g. T1, TRUS or spine T2w;
``moving_encoder`` for the moving one, e.g. T2, MR or spine T1w), each map an image ``(B, 1, *S)`` to a
dense representation ``(B, C, *S)``. Trained on ALIGNED pairs with a symmetric InfoNCE loss over
corresponding pixels: the representation of pixel ``i`` in one modality must be closer (critic
``-mean_c (a_i - b_j)^2 / tau``) to that of the same pixel in the other modality than to any other sampled
pixel. Corresponding structures then look alike in both representations, so registration runs a
MONO-modal method on them: optionally a rigid/affine stage
(:func:`regcore.methods.classical.affine.optimise_affine`), then regcore's multi-level dense /
stationary-velocity optimisation (:func:`regcore.methods.classical.dense.optimise_field`, global NCC by
default) of the fixed representation against the moving one; the composed field is applied to the moving
image.

Fields are ``(B, n, *S)`` voxels of the fixed grid, fixed -> moving (``warped = moving o (id + u)``).
The networks are fully convolutional and registration runs at the images' own resolution (``native_grid``).
Training (:mod:`regcore.methods.learned._comir_train`) draws aligned pairs from the
``train_sets`` of :mod:`regcore.data.multimodal` (train splits only); pairs with a known true field are
aligned by it, pairs with labels on both sides by a label-driven fit (see :func:`regcore.data.multimodal.aligned_pair`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.contrastive import cut, info_nce, sample_points, shifted_crops
from regcore.methods.learned.family import (
    LearnedFamily,
    LearnedSettings,
    Prediction,
    StepContext,
    register_family,
)
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class CoMIRConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32),
        "Channels per level of each encoder U-Net, finest first. Three levels see ~30 px around a pixel, so a code "
        "describes local anatomy; the four-level (8, 16, 32, 32) encoders of the first weights learned smooth "
        "position-like codes instead (held-out sample T1/T2 Dice 0.836 against 0.889).",
    )
    channels: int = param(
        3, "Channels C of the representation (the paper used 1 or 3); the maps show the first.", range=(1, 16)
    )
    temperature: float = param(
        0.5, "InfoNCE temperature tau of the critic -mean_c (a - b)^2 / tau.", range=(0.01, 10.0)
    )
    samples: int = param(
        1024,
        "Corresponding pixels per batch in the InfoNCE loss (each one's negatives: the others).",
        range=(8, 8192),
    )
    foreground_fraction: float = param(
        0.75, "Share of sampled pixels drawn where either image is brighter than 0.05.", range=(0.0, 1.0)
    )
    max_shift: int = param(
        16,
        "Training: the two modalities are cut at crops shifted by up to this many pixels (corresponding pixels then "
        "sit at different places in the two crops, so the encoders cannot match them by their distance to the border).",
        range=(0, 64),
    )
    negatives: str = param(
        "image",
        "Where each sampled pixel's negatives come from: image (only pixels of the same crop, so near neighbours "
        "compete and the codes must separate fine structure; `samples` are then split evenly over the crops; the "
        "shipped weights, as in the paper) or batch (pixels of every crop of the batch).",
        choices=("batch", "image"),
    )
    train_sets: str = param(
        "sample_t1t2,prostate_mr_us,spine_t1t2",
        "Comma-separated regcore.data.multimodal sets (train splits) the CoMIR trainer draws aligned pairs from; "
        "empty = the recipe's common data source.",
    )


@dataclass(frozen=True)
class CoMIRSettings(LearnedSettings):
    similarity: str = param(
        "ncc",
        "Mono-modal similarity between the two representations. On 10 TRAIN pairs of each multimodal set "
        "(sample T1/T2, spine, MR/TRUS) ncc gave the best mean Dice (0.781; mse 0.769, lncc 0.778) and TRE "
        "(1.74 mm; mse 1.85, lncc 1.77).",
        choices=("mse", "ncc", "lncc"),
    )
    transform: str = param(
        "none",
        "Linear stage on the representations before the deformable one (the paper registers its codes "
        "rigidly or affinely): none, rigid or affine. Shipped weights, 10 TRAIN pairs of each multimodal set, mean "
        "over the sets of the median Dice: none 0.842, rigid 0.844, affine 0.851. none was the default fixed before "
        "the held-out benchmark (benchmarks/results/multimodal.md), so those numbers describe it. Use rigid or affine "
        "when the images are rotated, shifted or scaled.",
        choices=("none", "rigid", "affine"),
    )
    transform_levels: tuple[int, ...] = param(
        (8, 4, 2),
        "Linear stage: downsampling factors, coarse to fine. The codes are local (they show edges and tissue, not "
        "position), so the coarsest level must blur them enough to see a 20-degree rotation: (4, 2) did not on TRAIN "
        "subject 2 (Dice 0.45 against 0.89).",
    )
    transform_iterations: tuple[int, ...] = param((150, 100, 60), "Linear stage: Adam iterations per level.")
    diffeomorphic: bool = param(
        True, "Optimise a stationary velocity (scaling and squaring) instead of a displacement."
    )
    weight: float = param(
        3.0,
        "Diffusion regulariser weight (higher = smoother). Shipped weights, 10 TRAIN pairs of each multimodal set, "
        "mean over the sets of the median Dice: 1 -> 0.850, 3 -> 0.842, 5 -> 0.839, 10 -> 0.837 (MR/TRUS TRE "
        "0.89 / 0.80 / 0.80 / 1.01 mm). 3 was chosen (over 10 and the first weights) before the held-out run; "
        "1 gains on MR/TRUS, whose TRAIN pairs are the encoders' own training pairs.",
        range=(0.0, 100.0),
        step=0.1,
    )
    levels: tuple[int, ...] = param((4, 2, 1), "Downsampling factors, coarse to fine.")
    iterations: tuple[int, ...] = param((100, 50, 25), "Adam iterations per level.")
    learning_rate: float = param(
        0.1, "Adam learning rate (voxels of the level grid per step).", range=(1e-3, 2.0), step=0.01
    )


# -- the family -----------------------------------------------------------------------------------


class Encoder(nn.Module):
    """One modality's encoder: image ``(B, 1, *S)`` -> representation ``(B, C, *S)`` (a U-Net, linear head)."""

    def __init__(self, dims: int, channels: int, widths: tuple[int, ...]):
        super().__init__()
        self.unet = ConvUNet(dims, in_channels=1, out_channels=channels, widths=widths)
        self.unet.head.reset_parameters()  # ConvUNet starts its head near zero (a field); a code must not
        for (
            m
        ) in self.unet.modules():  # reflect, not zero, padding: the border must not tell a pixel's position
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                m.padding_mode = "reflect"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)


def _joint_standardise(rf: torch.Tensor, rm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both representations shifted/scaled per channel by the SAME mean and std (so equal values stay equal)."""
    both = torch.cat([rf, rm], 0).transpose(0, 1).flatten(1)
    mean, std = both.mean(1), both.std(1).clamp_min(1e-6)
    view = (1, -1) + (1,) * (rf.ndim - 2)
    return (rf - mean.view(view)) / std.view(view), (rm - mean.view(view)) / std.view(view)


def _ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-8))


def align_moving(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's moving images on the fixed grid: warped by the true field where it is known (``has_true``),
    unchanged otherwise (those pairs must already be aligned)."""
    moving = batch["moving"]
    has = batch.get("has_true")
    if has is None or not bool(has.any()):
        return moving
    sel = has.view(-1, *([1] * (moving.ndim - 1))).to(moving.dtype)
    return sel * warp(moving, batch["true_displacement"].to(moving.dtype)) + (1 - sel) * moving


@register_family
class CoMIR(LearnedFamily):
    name = "comir"
    title = "CoMIR (contrastive multimodal representations + mono-modal registration)"
    paper = (
        "Pielawski, Wetzer, Ofverstedt, Lu, Wahlby, Lindblad & Sladoje, CoMIR: contrastive multimodal image "
        "representation for registration, NeurIPS 2020"
    )
    summary = (
        "Two networks, one per modality, are trained on aligned image pairs to turn both images into the "
        "same kind of picture: a contrastive loss rewards a pixel's code for matching the code of the same "
        "pixel in the other modality and for differing from every other pixel. A multimodal problem then "
        "becomes a mono-modal one: an ordinary deformable registration aligns the two codes by their "
        "correlation, and the resulting field warps the moving image. The Mechanism view of Evaluate shows "
        "both codes."
    )
    supervision = Supervision.UNSUPERVISED
    Config = CoMIRConfig
    Settings = CoMIRSettings
    predict_needs_grad = True
    native_grid = True  # inference keeps the image grid: the encoders are fully convolutional

    def build(self, dims: int, config: CoMIRConfig) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "fixed_encoder": Encoder(dims, config.channels, config.widths),
                "moving_encoder": Encoder(dims, config.channels, config.widths),
            }
        )

    def divisor(self, dims: int, config: CoMIRConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def recipe(self, dims: int) -> dict[str, Any]:
        return {"spacing_mm": 2.0, "train_shape": (80, 80) if dims == 2 else (64, 64, 64)}

    def representations(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rep_fixed, rep_moving)`` ``(B, C, *S)`` of images ``(B, 1, *S)`` in [0, 1]."""
        return nets["fixed_encoder"](fixed), nets["moving_encoder"](moving)

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = ctx.family_config
        fixed, moving = batch["fixed"], align_moving(batch)
        g = torch.Generator().manual_seed(int(ctx.config.seed) * 100003 + int(ctx.step))
        fixed, moving, f_in, m_in = shifted_crops(
            fixed, moving, cfg.max_shift, self.divisor(fixed.ndim - 2, cfg), g
        )
        rf, rm = self.representations(nets, moving, fixed)
        # the overlap windows of each crop, flattened: (1, C, N_i, 1) per crop i (corresponding voxel by voxel)
        pieces: list[tuple[torch.Tensor, ...]] = [
            tuple(
                cut(x[i : i + 1], w).flatten(2)[..., None]
                for x, w in ((rf, fw), (rm, mw), (fixed, fw), (moving, mw))
            )
            for i, (fw, mw) in enumerate(zip(f_in, m_in))
        ]
        if cfg.negatives == "image":  # one InfoNCE per crop: negatives from the same image only
            n = max(2, cfg.samples // len(pieces))
            pts = [
                sample_points(r_f, r_m, i_f, i_m, n, cfg.foreground_fraction, g)
                for r_f, r_m, i_f, i_m in pieces
            ]
            loss = torch.stack([info_nce(pa, pb, cfg.temperature) for pa, pb in pts]).mean()
            a, b = torch.cat([pa for pa, _ in pts]), torch.cat([pb for _, pb in pts])
        else:
            r_f, r_m, i_f, i_m = (torch.cat(parts, 2) for parts in zip(*pieces))
            a, b = sample_points(r_f, r_m, i_f, i_m, cfg.samples, cfg.foreground_fraction, g)
            loss = info_nce(a, b, cfg.temperature)
        with torch.no_grad():
            gap = (a - b).pow(2).mean() / (a - b[torch.randperm(len(b), generator=g)]).pow(
                2
            ).mean().clamp_min(1e-12)
        return {"info_nce": loss, "distance_ratio": gap, "total": loss}

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: CoMIRConfig, settings=None
    ) -> Prediction:
        if moving.shape != fixed.shape or moving.ndim not in (4, 5):
            raise ValueError(
                f"moving and fixed must be (B, 1, *S) of one shape, got {tuple(moving.shape)} and {tuple(fixed.shape)}"
            )
        s = settings if isinstance(settings, CoMIRSettings) else CoMIRSettings()
        outs = [self._register_one(nets, moving[i : i + 1], fixed[i : i + 1], s) for i in range(len(fixed))]
        pred = outs[0]
        if len(outs) > 1:
            pred = Prediction(displacement=torch.cat([o.displacement for o in outs]), extras=outs[0].extras)
        return pred

    def _register_one(self, nets, moving: torch.Tensor, fixed: torch.Tensor, s: CoMIRSettings) -> Prediction:
        from regcore.losses import make_regularizer, make_similarity
        from regcore.methods.classical.affine import TransformKind, optimise_affine
        from regcore.methods.classical.dense import optimise_field
        from regcore.methods.classical.pyramid import validate_schedule
        from regcore.spatial.affine import affine_to_displacement
        from regcore.spatial.compose import compose
        from regcore.spatial.svf import integrate_svf

        n = fixed.ndim - 2
        with torch.no_grad():
            rf, rm = _joint_standardise(*self.representations(nets, moving, fixed))
        history: list[dict[str, float]] = []
        u_linear, matrix = None, None
        if s.transform != "none":
            levels, iterations = validate_schedule(s.transform_levels, s.transform_iterations)
            with torch.enable_grad():
                matrix = optimise_affine(
                    rf,
                    rm,
                    (1.0,) * n,
                    kind=TransformKind(s.transform),
                    similarity=make_similarity(s.similarity, n),
                    levels=levels,
                    iterations=iterations,
                    learning_rate=0.01,
                    init="identity",
                    history=history,
                )
            u_linear = affine_to_displacement(matrix[None], tuple(fixed.shape[2:]))
        rm_start = rm if u_linear is None else warp(rm, u_linear)
        steps = 7
        to_disp = (lambda p: integrate_svf(p, steps)) if s.diffeomorphic else (lambda p: p)
        with torch.enable_grad():
            p = optimise_field(
                rf,
                rm_start,
                levels=s.levels,
                iterations=s.iterations,
                learning_rate=s.learning_rate,
                similarity=make_similarity(s.similarity, n),
                regularizer=make_regularizer("diffusion"),
                weight=s.weight,
                to_displacement=to_disp,
                history=history,
            )
        with torch.no_grad():
            u_deform = to_disp(p)
            u = u_deform if u_linear is None else compose(u_linear, u_deform)
            warped_rep = warp(rm, u)
            traj = None
            if s.diffeomorphic:
                traj = [integrate_svf(p * t, steps) for t in np.linspace(0, 1, 7)]
                if u_linear is not None:
                    traj = [compose(u_linear, d) for d in traj]
            extras: dict[str, Any] = {
                "maps": {
                    "comir_fixed": rf[:, :1].detach(),
                    "comir_moving": rm[:, :1].detach(),
                    "comir_moving_warped": warped_rep[:, :1].detach(),
                },
                "loss_history": [h.get("total", h["similarity"]) for h in history],
                "image_ncc_before": _ncc(fixed, moving),
                "representation_ncc_before": _ncc(rf, rm),
                "representation_ncc_after": _ncc(rf, warped_rep),
            }
        return Prediction(
            displacement=u.detach(),
            velocity=p.detach() if s.diffeomorphic and u_linear is None else None,
            affine=None if matrix is None else matrix[None],
            trajectory=traj,
            extras=extras,
        )
