"""Training of the CoMIR encoders (:mod:`regcore.methods.learned.comir`) on ALIGNED multimodal pairs.

    python -m regcore.methods.learned._comir_train --recipe assets/models/comir2d.recipe.json --out runs/comir2d

The recipe is a TrainConfig (family ``comir``). Pairs come from the TRAIN splits of the sets named in
``family_config.train_sets`` (:func:`regcore.data.multimodal.multimodal_pairs`); each pair's moving image is
aligned to its fixed one first (:func:`align_pair`). With ``train_sets`` empty the engine's own data source
(:class:`regcore.train.datasets.PairSource`) is used. Writes ``out/model.pt`` in the engine's checkpoint format
(``out/last.pt`` every 100 steps) and ``out/metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regcore.methods.learned.comir import CoMIR
from regcore.methods.learned.family import StepContext
from regcore.spatial.warp import warp


def align_pair(pair: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fixed, moving_aligned)`` ``(1, 1, *S)`` normalised to [0, 1] (as inference does) for a training Pair.

    The moving image is aligned to the fixed one by the pair's true field when it has one (synthetic sample
    brains), else by a smooth dense fit of its label maps (MSE of the one-hot labels, diffusion-regularised; the
    prostate gland and spine cord masks of TRAINING pairs only), else used as it is.
    """
    from regcore.nets.inputs import normalise_intensity

    fixed = normalise_intensity(pair.fixed.batch()[:, :1].float())
    moving = normalise_intensity(pair.moving.batch()[:, :1].float())
    if pair.true_displacement is not None:
        return fixed, warp(moving, pair.true_displacement.float())
    if pair.fixed_labels is None or pair.moving_labels is None:
        return fixed, moving
    from regcore.losses import make_regularizer, make_similarity
    from regcore.methods.classical.dense import optimise_field

    lf, lm = pair.fixed_labels.batch().long(), pair.moving_labels.batch().long()
    k = int(max(lf.max(), lm.max())) + 1
    one_f = F.one_hot(lf[:, 0], k).movedim(-1, 1)[:, 1:].float()
    one_m = F.one_hot(lm[:, 0], k).movedim(-1, 1)[:, 1:].float()
    with torch.enable_grad():
        u = optimise_field(
            one_f,
            one_m,
            levels=(4, 2, 1),
            iterations=(60, 40, 20),
            learning_rate=0.2,
            similarity=make_similarity("mse", fixed.ndim - 2),
            regularizer=make_regularizer("diffusion"),
            weight=0.5,
        )
    return fixed, warp(moving, u)


def _crop(
    f: torch.Tensor, m: torch.Tensor, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random crop (zero-padded first when the image is smaller) of ``(1, 1, *S)`` images."""
    pads = []
    for have, want in zip(reversed(f.shape[2:]), reversed(shape)):
        extra = max(want - have, 0)
        pads += [extra // 2, extra - extra // 2]
    f, m = F.pad(f, pads), F.pad(m, pads)
    sl = [slice(None), slice(None)]
    for have, want in zip(f.shape[2:], shape):
        start = int(rng.integers(0, have - want + 1))
        sl.append(slice(start, start + want))
    return f[tuple(sl)], m[tuple(sl)]


class AlignedPairs:
    """Training batches of aligned multimodal crops from the train splits of ``train_sets`` (each set drawn equally
    often), with joint flips/90-degree rotations and independent intensity augmentation."""

    def __init__(self, config: Any, root: Path | None = None):
        from regcore.data.multimodal import multimodal_pairs

        self.config = config
        self.sets: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.names: list[str] = []
        for name in [s.strip() for s in config.family_config.train_sets.split(",") if s.strip()]:
            try:
                pairs = multimodal_pairs(name, "train", root)
            except FileNotFoundError:
                continue  # the shared data folder is absent: train on what exists
            if pairs:
                self.sets.append([align_pair(p) for p in pairs])
                self.names.append(name)
        if not self.sets:
            raise ValueError(
                f"CoMIRConfig.train_sets {config.family_config.train_sets!r} gave no training pairs"
            )

    def batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        from regcore.train.datasets import augment_intensity

        c, fs, ms = self.config, [], []
        for _ in range(c.batch_size):
            pairs = self.sets[int(rng.integers(len(self.sets)))]
            f, m = _crop(*pairs[int(rng.integers(len(pairs)))], tuple(c.train_shape), rng)
            if c.augment:
                dims = list(range(2, f.ndim))
                for d in dims:
                    if rng.random() < 0.5:
                        f, m = f.flip(d), m.flip(d)
                if c.dims == 2 and f.shape[2] == f.shape[3]:
                    k = int(rng.integers(4))
                    f, m = torch.rot90(f, k, (2, 3)), torch.rot90(m, k, (2, 3))
            if c.intensity_augment:
                f, m = augment_intensity(f[0], rng)[None], augment_intensity(m[0], rng)[None]
            fs.append(f)
            ms.append(m)
        return {
            "fixed": torch.cat(fs),
            "moving": torch.cat(ms),
            "has_true": torch.zeros(len(fs), dtype=torch.bool),
        }


def train(recipe: str | Path, out: str | Path, root: Path | None = None) -> Path:
    """Train CoMIR encoders from a recipe (TrainConfig JSON) on aligned train pairs; writes ``out/model.pt`` (the
    engine's checkpoint format) and ``out/metrics.jsonl``. Returns the checkpoint path."""
    from regcore.train.checkpoint import save_checkpoint
    from regcore.train.config import load_config
    from regcore.train.datasets import PairSource
    from regcore.train.loop import _payload

    config = load_config(recipe)
    if config.family != CoMIR.name:
        raise ValueError(f"recipe family must be 'comir', got {config.family!r}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    family = config.learned_family()
    nets = family.build(config.dims, config.family_config)
    opts = family.optimizers(nets, config.lr)
    source: Any = (
        AlignedPairs(config, root) if config.family_config.train_sets.strip() else PairSource(config)
    )
    ctx = StepContext(config=config, family_config=config.family_config, similarity=nn.Identity())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total, t0, step, terms = config.epochs * config.steps_per_epoch, time.perf_counter(), 0, {}
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as log:
        while step < total:
            if config.time_limit_min and time.perf_counter() - t0 > 60 * config.time_limit_min:
                break
            ctx.step = step
            terms = family.train_step(
                nets, opts, source.batch(np.random.default_rng([config.seed, step])), ctx
            )
            step += 1
            log.write(json.dumps({"step": step, "time_s": time.perf_counter() - t0, **terms}) + "\n")
            if step % 100 == 0:
                log.flush()
                meta = {"info_nce": terms["info_nce"]}
                save_checkpoint(
                    out / "last.pt", _payload(config, nets, None, 0, step, time.perf_counter() - t0, meta)
                )
                print(
                    f"step {step}/{total} {time.perf_counter() - t0:.0f}s info_nce {terms['info_nce']:.4f}",
                    flush=True,
                )
    meta = {"final_info_nce": terms.get("info_nce", float("nan")), "sets": getattr(source, "names", [])}
    payload = _payload(
        config, nets, None, step // config.steps_per_epoch, step, time.perf_counter() - t0, meta
    )
    return save_checkpoint(out / "model.pt", payload)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train CoMIR encoders on aligned multimodal training pairs.")
    ap.add_argument("--recipe", required=True, help="TrainConfig JSON with family 'comir'")
    ap.add_argument("--out", required=True, help="output folder (model.pt, metrics.jsonl)")
    args = ap.parse_args(argv)
    print(train(args.recipe, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
