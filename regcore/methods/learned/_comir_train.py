"""Training of the CoMIR encoders (:mod:`regcore.methods.learned.comir`) on ALIGNED multimodal pairs.

    python -m regcore.methods.learned._comir_train --recipe assets/models/comir2d.recipe.json --out runs/comir2d

The recipe is a TrainConfig (family ``comir``). Pairs come from the TRAIN splits of the sets named in
``family_config.train_sets`` (:func:`regcore.data.multimodal.multimodal_pairs`); each pair's moving image is
aligned to its fixed one first (:func:`regcore.data.multimodal.aligned_pair`). With ``train_sets`` empty the engine's own data source
(:class:`regcore.train.datasets.PairSource`) is used. Writes ``out/model.pt`` in the engine's checkpoint format
(``out/last.pt`` every 100 steps) and ``out/metrics.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from regcore.methods.learned.comir import CoMIR


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
        from regcore.data.multimodal import aligned_pair, multimodal_pairs

        self.config = config
        self.sets: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.names: list[str] = []
        for name in [s.strip() for s in config.family_config.train_sets.split(",") if s.strip()]:
            try:
                pairs = multimodal_pairs(name, "train", root)
            except FileNotFoundError:
                continue  # the shared data folder is absent: train on what exists
            if pairs:
                self.sets.append([aligned_pair(p) for p in pairs])
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
    from regcore.train.config import load_config
    from regcore.train.datasets import PairSource
    from regcore.train.source_loop import train_on_source

    config = load_config(recipe)
    if config.family != CoMIR.name:
        raise ValueError(f"recipe family must be 'comir', got {config.family!r}")
    source: Any = (
        AlignedPairs(config, root) if config.family_config.train_sets.strip() else PairSource(config)
    )
    return train_on_source(config, source, out, report_key="info_nce", init_checkpoint=config.init_checkpoint)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train CoMIR encoders on aligned multimodal training pairs.")
    ap.add_argument("--recipe", required=True, help="TrainConfig JSON with family 'comir'")
    ap.add_argument("--out", required=True, help="output folder (model.pt, metrics.jsonl)")
    args = ap.parse_args(argv)
    print(train(args.recipe, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
