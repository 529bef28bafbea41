"""Deep similarity in a classical optimiser (Simonovsky et al., MICCAI 2016; Haskins et al., IJCARS 2019).

A small fully convolutional 2-channel CNN reads the fixed image and the warped moving image stacked as
channels and outputs a local alignment logit map ``(B, 1, *S)`` (receptive field 19 voxels). It is trained
on ALIGNED multimodal training pairs (:mod:`regcore.data.multimodal` train splits, aligned by their true
field or a fit of their label maps: :func:`regcore.data.multimodal.aligned_pair`) against deliberately
misaligned copies: the moving image is moved by a random rigid transform of RMS displacement ``d`` voxels
and the target is the soft label ``exp(-d^2 / (2 sigma^2))`` (1 = aligned), binary cross-entropy of every
voxel's logit against it (inside the content mask). The image score is the masked mean logit; it falls
smoothly with misalignment, which is what gradient descent needs.

Registration (``predict``, the checkpoint is the scorer) minimises ``softplus(-score)`` of the pair: first
an affine (Adam on ``I + A`` about the image centre and a voxel translation), then optionally a dense
residual field (regcore's classical :func:`~regcore.methods.classical.dense.optimise_field` with the learned
loss as its similarity and a diffusion regulariser). The images stay on their own grid (``native_grid``).
Displacements are ``(B, n, *S)`` voxels, fixed -> moving (``warped = moving o (id + u)``).

Train: ``python -m regcore.methods.learned.deep_similarity --recipe assets/models/deep_similarity2d.recipe.json
--out runs/deep_similarity2d``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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
from regcore.spatial.affine import affine_params_to_matrix, affine_to_displacement
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class DeepSimilarityConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32, 32), "Channels of the 3x3 conv layers (dilations 1, 2, 4, 2)."
    )
    max_shift: float = param(
        8.0, "Largest RMS misalignment (voxels) of the training negatives.", range=(1.0, 32.0)
    )
    sigma: float = param(
        2.0, "Soft-label width (voxels): target = exp(-d^2 / 2 sigma^2).", range=(0.25, 16.0)
    )
    train_sets: str = param(
        "sample_t1t2,prostate_mr_us,spine_t1t2",
        "Comma-separated regcore.data.multimodal sets whose TRAIN pairs (aligned) the trainer draws from.",
    )


@dataclass(frozen=True)
class DeepSimilaritySettings(LearnedSettings):
    affine_iterations: int = param(100, "Adam steps of the affine stage.", range=(0, 5000))
    affine_lr: float = param(
        0.01, "Affine Adam rate (matrix units; translation x 50 in voxels).", range=(1e-4, 0.5)
    )
    dense_iterations: int = param(60, "Adam steps of the dense stage (0 = affine only).", range=(0, 5000))
    dense_lr: float = param(0.1, "Dense Adam rate (voxels per step).", range=(1e-3, 2.0))
    dense_weight: float = param(2.0, "Diffusion weight of the dense stage.", range=(0.0, 100.0))


class ScoreNet(nn.Module):
    """``(B, 2, *S)`` (fixed, warped moving) -> local alignment logits ``(B, 1, *S)`` (same size)."""

    DILATIONS = (1, 2, 4, 2)

    def __init__(self, dims: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        layers: list[nn.Module] = []
        c_in = 2
        for i, w in enumerate(widths):
            d = self.DILATIONS[i % len(self.DILATIONS)]
            layers += [conv(c_in, int(w), 3, padding=d, dilation=d), norm(int(w)), nn.LeakyReLU(0.2)]
            c_in = int(w)
        layers.append(conv(c_in, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def content_mask(fixed: torch.Tensor) -> torch.Tensor:
    """Where the score is averaged: fixed voxels > 0.02, dilated by 2 voxels ``(B, 1, *S)`` float."""
    pool = F.max_pool2d if fixed.ndim == 4 else F.max_pool3d
    return pool((fixed > 0.02).float(), 5, stride=1, padding=2)


def score(
    nets: nn.ModuleDict, fixed: torch.Tensor, warped: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image logit (B,), logit map (B, 1, *S))``: the masked mean of the local logits."""
    logits = nets["scorer"](torch.cat([fixed, warped], 1))
    m = content_mask(fixed)
    dims = tuple(range(1, logits.ndim))
    return (logits * m).sum(dims) / m.sum(dims).clamp_min(1.0), logits


class LearnedLoss(nn.Module):
    """Callable ``(fixed, warped) -> softplus(-score)`` (lower = better aligned), for classical optimisers."""

    def __init__(self, nets: nn.ModuleDict) -> None:
        super().__init__()
        self.nets = nets

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        return F.softplus(-score(self.nets, fixed, warped)[0]).mean()


def random_misalignment(
    batch: int, shape: tuple[int, ...], max_shift: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 2D rigid displacements ``(B, 2, *S)`` (voxels) and their RMS size ``d`` ``(B,)``.

    A quarter of the batch is exactly aligned (d = 0); the rest has a translation and a rotation about
    the centre scaled so that the RMS displacement is uniform in ``[0, max_shift]``."""
    if len(shape) != 2:
        raise ValueError(f"random_misalignment makes 2D transforms, got shape {shape}")
    u = torch.rand(batch, generator=generator) * max_shift
    u[: max(1, batch // 4)] = 0.0
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * 0.15
    direction = torch.rand(batch, generator=generator) * 2 * math.pi
    params = torch.zeros(batch, 2, 3)
    params[:, 0, 0] = torch.cos(angle) - 1
    params[:, 0, 1] = -torch.sin(angle)
    params[:, 1, 0] = torch.sin(angle)
    params[:, 1, 1] = torch.cos(angle) - 1
    params[:, 0, 2] = torch.cos(direction)
    params[:, 1, 2] = torch.sin(direction)
    disp = affine_to_displacement(affine_params_to_matrix(params, shape), shape)
    rms = disp.pow(2).sum(1).mean(tuple(range(1, disp.ndim - 1))).sqrt().clamp_min(1e-6)
    return disp * (u / rms).view(-1, 1, 1, 1), u


class DeepSimilarity(LearnedFamily):
    name = "deep_similarity"
    title = "Deep similarity (learned multimodal metric in a classical optimiser)"
    paper = (
        "Simonovsky, Gutierrez-Becker, Mateus, Navab & Komodakis, A deep metric for multimodal registration, "
        "MICCAI 2016; Haskins et al., Learning deep similarity metric for 3D MR-TRUS image registration, IJCARS 2019"
    )
    summary = (
        "A small network learns to tell whether two images of different contrasts (MR and ultrasound, T1 and "
        "T2) are aligned: it was shown aligned training pairs and deliberately shifted copies. Registration is "
        "then classical: gradient descent moves an affine transform (and optionally a smooth dense field) to "
        "raise the network's score. The similarity map shows where the network believes the images agree."
    )
    supervision = Supervision.UNSUPERVISED
    Config = DeepSimilarityConfig
    Settings = DeepSimilaritySettings
    dims = (2,)
    predict_needs_grad = True
    native_grid = True  # fully convolutional: registration runs on the images' own grid

    def build(self, dims: int, config: DeepSimilarityConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"scorer": ScoreNet(dims, tuple(config.widths))})

    def recipe(self, dims: int) -> dict[str, Any]:
        return {"spacing_mm": 1.0, "train_shape": (32, 32)}

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """BCE of the image score against soft labels of random rigid misalignments of ALIGNED pairs
        (a batch with a true field is aligned by it first)."""
        cfg = ctx.family_config
        fixed, moving = batch["fixed"], batch["moving"]
        if "has_true" in batch and bool(batch["has_true"].any()):
            aligned = warp(moving, batch["true_displacement"].float())
            moving = torch.where(batch["has_true"].view(-1, 1, 1, 1), aligned, moving)
        g = torch.Generator().manual_seed(int(ctx.config.seed) * 100003 + int(ctx.step))
        disp, d = random_misalignment(fixed.shape[0], tuple(fixed.shape[2:]), cfg.max_shift, g)
        target = torch.exp(-(d**2) / (2 * cfg.sigma**2)).to(fixed.device)
        logit, logits = score(nets, fixed, warp(moving, disp.to(fixed.device)))
        m = content_mask(fixed)
        per_voxel = F.binary_cross_entropy_with_logits(
            logits, target.view(-1, *([1] * (logits.ndim - 1))).expand_as(logits), reduction="none"
        )
        bce = (per_voxel * m).sum() / m.sum().clamp_min(1.0)
        ranking = (
            torch.sigmoid(logit)[d == 0].mean() - torch.sigmoid(logit)[d > 2 * cfg.sigma].mean()
        ).detach()
        return {"total": bce, "bce": bce, "separation": torch.nan_to_num(ranking)}

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: Any, settings: Any = None
    ) -> Prediction:
        s = settings if isinstance(settings, DeepSimilaritySettings) else DeepSimilaritySettings()
        if fixed.ndim != 4 or moving.shape != fixed.shape or fixed.shape[1] != 1:
            raise ValueError(
                f"fixed and moving must both be (B, 1, H, W), got {tuple(fixed.shape)} and {tuple(moving.shape)}"
            )
        outs = [
            self._register_one(nets, moving[b : b + 1], fixed[b : b + 1], s) for b in range(fixed.shape[0])
        ]
        if len(outs) == 1:
            return outs[0]
        return Prediction(
            displacement=torch.cat([o.displacement for o in outs]),
            affine=torch.cat([o.affine for o in outs]),  # type: ignore[misc]
        )

    def _register_one(self, nets, moving, fixed, s: DeepSimilaritySettings) -> Prediction:
        for p in nets.parameters():
            p.requires_grad_(False)
        shape = tuple(fixed.shape[2:])
        loss_fn = LearnedLoss(nets)
        history: list[float] = []
        lin = torch.zeros(1, 2, 2, requires_grad=True)
        trans = torch.zeros(1, 2, 1, requires_grad=True)
        opt = torch.optim.Adam(
            [{"params": [lin]}, {"params": [trans], "lr": 50 * s.affine_lr}], lr=s.affine_lr
        )
        snapshots = []
        with torch.enable_grad():
            for it in range(s.affine_iterations):
                matrix = affine_params_to_matrix(torch.cat([lin, trans], 2), shape)
                loss = loss_fn(fixed, warp(moving, affine_to_displacement(matrix, shape)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append(float(loss.detach()))
                if it % max(1, s.affine_iterations // 8) == 0:
                    snapshots.append(matrix.detach())
            matrix = affine_params_to_matrix(torch.cat([lin, trans], 2), shape).detach()
            u_aff = affine_to_displacement(matrix, shape)
            u = u_aff
            if s.dense_iterations:
                from regcore.losses import make_regularizer
                from regcore.methods.classical.dense import optimise_field

                records: list[dict] = []
                p = optimise_field(
                    fixed,
                    moving,
                    levels=(1,),
                    iterations=(s.dense_iterations,),
                    learning_rate=s.dense_lr,
                    similarity=loss_fn,
                    regularizer=make_regularizer("diffusion"),
                    weight=s.dense_weight,
                    to_displacement=lambda q: u_aff + q,
                    history=records,
                )
                history += [r["similarity"] for r in records]
                u = u_aff + p
        with torch.no_grad():
            before, _ = score(nets, fixed, moving)
            after, logits = score(nets, fixed, warp(moving, u))
        trajectory = [affine_to_displacement(m, shape) for m in snapshots[:10]] + [u]
        return Prediction(
            displacement=u,
            affine=matrix,
            trajectory=[torch.zeros_like(u)] + trajectory,
            extras={
                "loss_history": history,
                "maps": {"similarity": torch.sigmoid(logits).detach()},
                "score_before": float(torch.sigmoid(before)[0]),
                "score_after": float(torch.sigmoid(after)[0]),
            },
        )


if __name__ != "__main__":  # `python -m` runs this file again as __main__ after the package registered it
    register_family(DeepSimilarity)


# -- training on aligned multimodal pairs -------------------------------------------------------------------
class AlignedCrops:
    """Batches of ALIGNED multimodal crops ``(B, 1, *train_shape)`` from the train splits of ``train_sets``
    (each set equally often; aligned with :func:`regcore.data.multimodal.aligned_pair`), joint flips,
    independent intensity augmentation."""

    def __init__(self, config: Any, root: Path | None = None) -> None:
        from regcore.data.multimodal import aligned_pair, multimodal_pairs

        self.config = config
        self.sets: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.names: list[str] = []
        for name in [n.strip() for n in config.family_config.train_sets.split(",") if n.strip()]:
            try:
                pairs = multimodal_pairs(name, "train", root)
            except FileNotFoundError:
                continue
            if pairs:
                self.sets.append([aligned_pair(p) for p in pairs])
                self.names.append(name)
        if not self.sets:
            raise ValueError(
                f"DeepSimilarityConfig.train_sets {config.family_config.train_sets!r} gave no pairs"
            )

    def batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        from regcore.train.datasets import augment_intensity

        c, fs, ms = self.config, [], []
        shape = tuple(c.train_shape)
        for _ in range(c.batch_size):
            pairs = self.sets[int(rng.integers(len(self.sets)))]
            f, m = pairs[int(rng.integers(len(pairs)))]
            pads = []
            for have, want in zip(reversed(f.shape[2:]), reversed(shape)):
                extra = max(want - have, 0)
                pads += [extra // 2, extra - extra // 2]
            f, m = F.pad(f, pads), F.pad(m, pads)
            starts = [int(rng.integers(0, h - w + 1)) for h, w in zip(f.shape[2:], shape)]
            sl = (slice(None), slice(None), *(slice(a, a + w) for a, w in zip(starts, shape)))
            f, m = f[sl], m[sl]
            if c.augment:
                for d in range(2, f.ndim):
                    if rng.random() < 0.5:
                        f, m = f.flip(d), m.flip(d)
            if c.intensity_augment:
                f, m = augment_intensity(f[0], rng)[None], augment_intensity(m[0], rng)[None]
            fs.append(f)
            ms.append(m)
        return {"fixed": torch.cat(fs), "moving": torch.cat(ms)}


def train(recipe: str | Path | Any, out: str | Path, root: Path | None = None, source: Any = None) -> Path:
    """Train the scorer from a recipe (TrainConfig JSON path or TrainConfig); writes ``out/model.pt`` (the
    engine's checkpoint format) and ``out/metrics.jsonl``. Returns the checkpoint path."""
    from regcore.train.config import TrainConfig, load_config
    from regcore.train.source_loop import train_on_source

    config = recipe if isinstance(recipe, TrainConfig) else load_config(recipe)
    if config.family != DeepSimilarity.name:
        raise ValueError(f"recipe family must be 'deep_similarity', got {config.family!r}")
    return train_on_source(
        config,
        source or AlignedCrops(config, root),
        out,
        report_key="bce",
        init_checkpoint=config.init_checkpoint,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Train the deep-similarity scorer on aligned multimodal train pairs."
    )
    ap.add_argument("--recipe", required=True, help="TrainConfig JSON with family 'deep_similarity'")
    ap.add_argument("--out", required=True, help="output folder (model.pt, metrics.jsonl)")
    args = ap.parse_args(argv)
    print(train(args.recipe, args.out))
    return 0


if __name__ == "__main__":
    from regcore.methods.learned import deep_similarity as _registered

    raise SystemExit(_registered.main())
