"""Training loop of the ``label_driven`` family on the real MR/TRUS prostate cases.

The generic engine cannot express this data source (centre-aligned MR/TRUS pairs, one soft map per
corresponding structure, independent random affines of the two images), so this module runs the loop
itself, through the family's own :meth:`~regcore.methods.learned.label_driven.LabelDriven.train_step`,
and saves a checkpoint in the engine's format (:func:`regcore.train.checkpoint.save_checkpoint`), which
the registration method and ``--set checkpoint=...`` load like any other.

    python -m regcore.methods.learned._label_driven_train --config assets/models/label_driven3d.recipe.json \\
        --out runs/label_driven3d            # trains on every case except regcore.data.prostate.HELD_OUT

The recipe is a plain :class:`~regcore.train.config.TrainConfig` (``family = "label_driven"``, ``dims = 3``,
``data_path`` = the ``prostate_mr_us`` folder, relative paths resolved from the repository root); its
``epochs * steps_per_epoch``, ``batch_size``, ``lr``, ``seed``, ``threads``, ``augment``,
``intensity_augment``, ``dice_weight``, ``regularizer_weight``, ``time_limit_min`` and ``family_config``
are used. Model-grid tensors follow :mod:`regcore.nets.inputs` exactly as inference prepares them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from regcore.data.prostate import HELD_OUT, ProstateCase, prostate_cases
from regcore.methods.learned.family import StepContext, get_family
from regcore.methods.learned.inference import resolve_checkpoint
from regcore.nets.inputs import ModelGrid, normalise_intensity, plan_model_grid, to_model_grid
from regcore.spatial.affine import affine_to_displacement
from regcore.spatial.warp import warp, warp_labels
from regcore.train.checkpoint import load_checkpoint, save_checkpoint
from regcore.train.config import TrainConfig, config_to_dict, load_config
from regcore.train.datasets import _random_affine, augment_intensity

REPO_ROOT = Path(__file__).resolve().parents[3]
MAX_STRUCTURES = 3
"""Gland + up to two landmark regions per case (the most any case has)."""


def model_grid(case: ProstateCase, config: TrainConfig) -> ModelGrid:
    """The grid inference plans for this case's TRUS image (training spacing, canvas, divisor)."""
    fam = config.learned_family()
    return plan_model_grid(
        case.us.shape,
        case.us.spacing,
        float(config.spacing_mm),
        fam.divisor(3, config.family_config),
        tuple(config.train_shape),
    )


def _maps(gland, landmarks, ids: Sequence[int], grid: ModelGrid) -> torch.Tensor:
    """``(1, MAX_STRUCTURES, *padded)`` soft maps: gland, then the landmark regions ``ids`` (linear resize)."""
    chans = [gland.data[0] > 0] + [landmarks.data[0] == k for k in ids]
    stack = torch.stack([c.float() for c in chans])[None]
    pad = torch.zeros(1, MAX_STRUCTURES - stack.shape[1], *stack.shape[2:])
    return to_model_grid(torch.cat([stack, pad], 1), grid).clamp(0.0, 1.0)


def case_tensors(case: ProstateCase, grid: ModelGrid) -> dict[str, torch.Tensor]:
    """One case on the model grid: ``moving``/``fixed`` ``(1, 1, *P)`` in [0, 1] (as inference normalises),
    ``moving_maps``/``fixed_maps`` ``(1, MAX_STRUCTURES, *P)`` and ``present`` ``(1, MAX_STRUCTURES)``."""
    ids: list[int] = []
    if case.mr_landmarks is not None and case.us_landmarks is not None:
        both = set(case.mr_landmarks.present_labels()) & set(case.us_landmarks.present_labels())
        ids = sorted(both)[: MAX_STRUCTURES - 1]
    present = torch.zeros(1, MAX_STRUCTURES, dtype=torch.bool)
    present[0, : 1 + len(ids)] = True
    return {
        "moving": normalise_intensity(to_model_grid(case.mr.batch(), grid)),
        "fixed": normalise_intensity(to_model_grid(case.us.batch(), grid)),
        "moving_maps": _maps(case.mr_gland, case.mr_landmarks, ids, grid),
        "fixed_maps": _maps(case.us_gland, case.us_landmarks, ids, grid),
        "present": present,
    }


def _affine_warp(
    image: torch.Tensor, maps: torch.Tensor, rng: np.random.Generator, strength: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and maps resampled through one random affine (about the centre, zeros outside)."""
    shape = tuple(image.shape[2:])
    a = _random_affine(
        shape, rng, rotation_deg=10.0 * strength, scale=0.1 * strength, shift_vox=3.0 * strength
    )
    u = affine_to_displacement(a, shape)
    return warp(image, u, padding_mode="zeros"), warp(maps, u, padding_mode="zeros")


def make_batch(
    items: Sequence[dict[str, torch.Tensor]],
    rng: np.random.Generator,
    *,
    augment: bool = True,
    intensity: bool = True,
    strength: float = 0.6,
) -> dict[str, torch.Tensor]:
    """Stack cases into a batch; augmentation = an independent random affine for each image (with its maps),
    a joint left-right flip (tensor axis 0) and random gamma/contrast/noise per image."""
    out: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("moving", "fixed", "moving_maps", "fixed_maps", "present")
    }
    for it in items:
        mov, fix, mmap, fmap = it["moving"], it["fixed"], it["moving_maps"], it["fixed_maps"]
        if augment:
            mov, mmap = _affine_warp(mov, mmap, rng, strength)
            fix, fmap = _affine_warp(fix, fmap, rng, strength)
            if rng.random() < 0.5:
                mov, fix, mmap, fmap = (t.flip(2) for t in (mov, fix, mmap, fmap))
        if intensity:
            mov, fix = augment_intensity(mov[0], rng)[None], augment_intensity(fix[0], rng)[None]
        for k, v in zip(out, (mov, fix, mmap, fmap, it["present"])):
            out[k].append(v)
    return {k: torch.cat(v, 0) for k, v in out.items()}


@torch.no_grad()
def gland_dice_on_grid(
    family, nets: nn.ModuleDict, item: dict[str, torch.Tensor], config
) -> tuple[float, float]:
    """Hard gland Dice on the model grid ``(before, after)`` for one un-augmented case (maps > 0.5)."""
    u = family.predict(nets, item["moving"], item["fixed"], config).displacement
    fixed = (item["fixed_maps"][:, :1] > 0.5).long()
    moving = (item["moving_maps"][:, :1] > 0.5).long()
    warped = warp_labels(moving, u)

    def dice(a: torch.Tensor, b: torch.Tensor) -> float:
        s = int(a.sum() + b.sum())
        return 2.0 * float((a * b).sum()) / s if s else 1.0

    return dice(fixed, moving), dice(fixed, warped)


def train(
    config: TrainConfig,
    cases: Sequence[ProstateCase],
    out: str | Path | None = None,
    *,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train ``label_driven`` on ``cases`` with ``config``; save ``<out>/model.pt`` when ``out`` is given.

    Returns:
        ``{"nets", "loss_history" (total per step), "steps", "elapsed_s", "train_dice" (per case, after),
        "checkpoint" (path or None)}``.
    """
    if config.family != "label_driven" or config.dims != 3:
        raise ValueError(
            f"config must train family 'label_driven' in 3D, got {config.family!r} {config.dims}D"
        )
    if not cases:
        raise ValueError("cases must hold at least one ProstateCase")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(int(config.seed))
    rng = np.random.default_rng(int(config.seed))
    family = get_family("label_driven")
    fc = config.family_config
    nets = family.build(3, fc)
    if config.init_checkpoint:  # fine-tuning: start from these weights (same family config)
        init = load_checkpoint(resolve_checkpoint(config.init_checkpoint))
        nets.load_state_dict(init["state_dict"])
    optimizers = family.optimizers(nets, float(config.lr))
    data = [case_tensors(c, model_grid(c, config)) for c in cases]
    shapes = {tuple(d["fixed"].shape) for d in data}
    if len(shapes) != 1:
        raise ValueError(f"cases give different model grids {sorted(shapes)}; set a larger train_shape")
    ctx = StepContext(config=config, family_config=fc, similarity=nn.Identity())
    total = int(config.epochs) * int(config.steps_per_epoch)
    limit_s = float(config.time_limit_min) * 60.0 or math.inf
    history: list[float] = []
    t0 = time.perf_counter()
    step = 0
    for step in range(total):
        nets.train()
        idx = rng.integers(len(data), size=int(config.batch_size))
        batch = make_batch(
            [data[i] for i in idx], rng, augment=config.augment, intensity=config.intensity_augment
        )
        ctx.step = step
        terms = family.train_step(nets, optimizers, batch, ctx)
        history.append(terms["total"])
        if log and ((step + 1) % int(config.steps_per_epoch) == 0 or step == 0):
            recent = float(np.mean(history[-int(config.steps_per_epoch) :]))
            log(
                f"step {step + 1}/{total}  loss {recent:.4f}  dice {terms['dice']:.4f}  "
                f"reg {terms['regularizer']:.5f}  {time.perf_counter() - t0:.0f}s"
            )
        if time.perf_counter() - t0 > limit_s:
            if log:
                log(f"time limit {config.time_limit_min} min reached after {step + 1} steps")
            break
    elapsed = time.perf_counter() - t0
    nets.eval()
    train_dice = {c.id: gland_dice_on_grid(family, nets, d, fc)[1] for c, d in zip(cases, data)}
    path = None
    if out is not None:
        path = save_checkpoint(
            Path(out) / "model.pt",
            {
                "family": family.name,
                "family_module": family.module(),
                "dims": 3,
                "family_config": family.config_dict(fc),
                "config": config_to_dict(config),
                "spacing_mm": float(config.spacing_mm),
                "train_shape": list(config.train_shape),
                "state_dict": {k: v.detach().cpu() for k, v in nets.state_dict().items()},
                "epoch": int(config.epochs),
                "step": step + 1,
                "elapsed_s": float(elapsed),
                "metrics": {
                    "train_cases": [c.id for c in cases],
                    "train_gland_dice": train_dice,
                    "final_loss": float(np.mean(history[-int(config.steps_per_epoch) :])),
                },
            },
        )
        (Path(out) / "loss_history.json").write_text(json.dumps(history), encoding="utf-8")
    return {
        "nets": nets,
        "loss_history": history,
        "steps": step + 1,
        "elapsed_s": elapsed,
        "train_dice": train_dice,
        "checkpoint": path,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train label_driven on the prostate MR/TRUS cases.")
    parser.add_argument("--config", required=True, help="TrainConfig recipe (JSON/TOML).")
    parser.add_argument("--out", required=True, help="Output folder (model.pt, loss_history.json).")
    parser.add_argument(
        "--held-out", default=",".join(HELD_OUT), help="Comma-separated case ids never trained on."
    )
    parser.add_argument("--init", default="", help="Start from this checkpoint (overrides init_checkpoint).")
    parser.add_argument("--seed", type=int, default=None, help="Override the recipe's seed.")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    changes: dict[str, Any] = {}
    if args.init:
        changes["init_checkpoint"] = args.init
    if args.seed is not None:
        changes["seed"] = args.seed
    config = replace(config, **changes) if changes else config
    root = Path(config.data_path) if config.data_path else None
    if root is not None and not root.is_absolute() and not root.exists():
        root = REPO_ROOT / root
    held = {c.strip() for c in args.held_out.split(",") if c.strip()}
    cases = [c for c in prostate_cases(root) if c.id not in held]
    print(f"training on {[c.id for c in cases]}; held out {sorted(held)}")
    result = train(config, cases, args.out)
    print(
        json.dumps(
            {
                "checkpoint": str(result["checkpoint"]),
                "steps": result["steps"],
                "elapsed_s": round(result["elapsed_s"], 1),
                "train_dice": result["train_dice"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
