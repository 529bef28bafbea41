"""TrainConfig: everything a training run needs, typed and UI-describable.

Saved as ``runs/<id>/config.json`` (:func:`save_config`) and read back with
:func:`load_config` (JSON, or TOML for hand-written recipes). Unknown keys or values outside
a field's range/choices raise ValueError naming the field.
"""

from __future__ import annotations

import enum
import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from regcore.config import from_overrides, param, to_dict
from regcore.losses import Similarity as SimilarityName


class DataSource(enum.StrEnum):
    BRAIN = "brain"  # regcore.data sample brain pairs
    SHAPES = "shapes"  # SynthMorph-style random label maps, generated on the fly
    MIXED = "mixed"  # alternate brain and shapes batches
    FOLDER = "folder"  # a folder or manifest CSV (data_path), via regcore.data.load_folder/manifest
    SLICES = "slices"  # 2D slice pairs of a labelled 3D folder (data_path), training positions only


class SupervisionMode(enum.StrEnum):
    UNSUPERVISED = "unsupervised"  # similarity + regulariser
    WEAK = "weak"  # + Dice of warped one-hot labels
    FULL = "full"  # MSE to the ground-truth displacement (+ regulariser)
    DUAL = "dual"  # ground-truth field + similarity (+ regulariser)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: the fields every family shares, plus the family's own config nested in
    ``family_config`` (an instance of ``get_family(family).Config``). Sizes are voxels of the model
    grid; spacing in mm."""

    family: str = param(
        "voxelmorph", "Learned family to train (any registered family; see `regcore methods`)."
    )
    dims: int = param(2, "Spatial dimensions of the training data.", choices=(2, 3))
    data: DataSource = param(
        DataSource.SHAPES,
        "Training pairs: sample brains, synthetic shapes, both, a folder, or "
        "2D slices of a labelled 3D folder (training positions; regcore.data.slices).",
    )
    data_path: str = param(
        "", "Folder or manifest CSV (data = folder), or a labelled 3D folder (data = slices).", advanced=True
    )
    spacing_mm: float = param(
        2.0, "Model resolution in mm per voxel; inputs are resampled to it.", range=(0.5, 8.0)
    )
    train_shape: tuple[int, ...] = param(
        (96, 112),
        "Model-grid shape (voxels) pairs are padded/cropped to; "
        "each size a multiple of the family's divisor.",
        range=(8, 1024),
    )
    supervision: SupervisionMode = param(
        SupervisionMode.UNSUPERVISED,
        "Loss: unsupervised, weak (labels), full (true fields) or dual (similarity on every pair, plus the field "
        "error on pairs whose true field is known: synthetic pairs and deformed copies).",
    )
    similarity: SimilarityName = param(SimilarityName.LNCC, "Image similarity term.")
    similarity_weight: float = param(1.0, "Weight of the image similarity.", range=(0.0, 100.0))
    regularizer_weight: float = param(
        1.0, "Weight of the diffusion regulariser (mean squared gradient, voxels).", range=(0.0, 100.0)
    )
    dice_weight: float = param(1.0, "Weight of the soft Dice term (weak supervision).", range=(0.0, 100.0))
    field_weight: float = param(
        0.1, "Weight of the ground-truth field MSE (voxels^2; full/dual).", range=(0.0, 100.0)
    )
    epochs: int = param(10, "Number of epochs.", range=(1, 10000))
    steps_per_epoch: int = param(50, "Optimiser steps per epoch.", range=(1, 100000))
    batch_size: int = param(4, "Pairs per step.", range=(1, 256))
    lr: float = param(1e-3, "Adam learning rate.", range=(1e-6, 1.0))
    augment: bool = param(True, "Random flips and small affine jitter of training pairs.")
    intensity_augment: bool = param(
        True, "Random gamma, contrast and noise so models generalise across scanners."
    )
    crop_shape: tuple[int, ...] = param(
        (),
        "Train on random crops of this size (voxels of the training grid; the same window of both images, "
        "their labels and field); empty = the whole grid. A 64^3 crop of an 80x96x112 brain makes a 3D step "
        "~3x cheaper. Fully convolutional families only: registration still runs on the whole grid.",
        range=(8, 1024),
        advanced=True,
    )
    deform_augment: float = param(
        0.0,
        "Share of real training pairs replaced by one of their two images and a smoothly deformed copy "
        "of it (known field): far more deformations than a few real pairs give.",
        range=(0.0, 1.0),
    )
    deform_augment_mm: float = param(
        8.0, "Largest displacement (mm) of those random deformations.", range=(0.0, 50.0), advanced=True
    )
    synthetic_pool: int = param(
        0,
        "Synthetic shapes: pre-generate this many pairs and draw from them "
        "(0 = a fresh pair every draw; a pool is much faster on CPU).",
        range=(0, 100000),
    )
    val_pairs: int = param(4, "Fixed validation pairs (Dice, folding) evaluated every epoch.", range=(1, 64))
    seed: int = param(0, "Random seed (weights, data, augmentation).", range=(0, 2**31 - 1))
    time_limit_min: float = param(
        0.0,
        "Stop (as finished) after this many minutes of training; 0 = no limit.",
        range=(0.0, 100000.0),
        advanced=True,
    )
    device: str = param(
        "auto", "auto = CUDA when available (with AMP), else CPU.", choices=("auto", "cpu", "cuda")
    )
    threads: int = param(0, "CPU threads for torch (0 = torch default).", range=(0, 256), advanced=True)
    init_checkpoint: str = param(
        "", "Start from these weights (fine-tuning); empty = random init.", advanced=True
    )
    family_config: Any = field(
        default=None, metadata={"help": "The family's own hyperparameters.", "nested": True}
    )

    def __post_init__(self) -> None:
        fam = self.learned_family()
        if self.family_config is None:
            object.__setattr__(self, "family_config", fam.make_config({}))
        elif not isinstance(self.family_config, fam.Config):
            raise TypeError(
                f"TrainConfig.family_config must be a {fam.Config.__name__} for family {self.family!r}, "
                f"got {type(self.family_config).__name__}"
            )
        if self.dims not in fam.dims:
            raise ValueError(
                f"TrainConfig.dims = {self.dims}, but family {self.family!r} supports {fam.dims}"
            )
        if len(self.train_shape) != self.dims:
            raise ValueError(
                f"TrainConfig.train_shape must have {self.dims} entries (dims), got {self.train_shape}"
            )
        divisor = fam.divisor(self.dims, self.family_config)
        if any(s % divisor or s < divisor for s in self.train_shape):
            raise ValueError(
                f"TrainConfig.train_shape sizes must be positive multiples of {divisor} for "
                f"{self.family}, got {self.train_shape}"
            )
        if self.crop_shape:
            if not fam.crop_training:
                raise ValueError(
                    f"TrainConfig.crop_shape: family {self.family!r} is not fully convolutional, so it must train "
                    "on the whole grid (leave crop_shape empty)"
                )
            if len(self.crop_shape) != self.dims or any(
                c > s or c % divisor for c, s in zip(self.crop_shape, self.train_shape)
            ):
                raise ValueError(
                    f"TrainConfig.crop_shape must have {self.dims} entries, each a multiple of {divisor} and at "
                    f"most train_shape {self.train_shape}, got {self.crop_shape}"
                )
        if self.data in (DataSource.FOLDER, DataSource.SLICES) and not self.data_path:
            raise ValueError(f"TrainConfig.data_path is required when data = '{self.data}'")
        if self.data == DataSource.SLICES and self.dims != 2:
            raise ValueError("TrainConfig.data = 'slices' gives 2D pairs: set dims = 2")

    def learned_family(self):
        """The :class:`~regcore.methods.learned.family.LearnedFamily` this recipe trains."""
        from regcore.methods.learned.family import get_family

        return get_family(self.family)


COMMON_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "family_config")


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a validated TrainConfig from JSON-like values (strings/lists accepted).

    ``family_config`` is a mapping of the family's own fields; ``family_module`` (written by
    :func:`config_to_dict` for plug-in families) is imported when the family is not yet known.
    Common fields not given take the family's :meth:`recipe` defaults, then TrainConfig's.
    """
    from regcore.methods.learned.family import get_family

    if not isinstance(values, dict):
        raise TypeError(f"config must be a mapping, got {type(values).__name__}")
    values = dict(values)
    if "model" in values:
        raise ValueError(
            "TrainConfig key 'model' is now 'family' (e.g. \"family\": \"voxelmorph\"), and family "
            "options such as 'diffeomorphic' go under 'family_config'"
        )
    module = values.pop("family_module", None)
    family_values = values.pop("family_config", None) or {}
    if not isinstance(family_values, dict):
        raise TypeError(f"TrainConfig.family_config must be a mapping, got {type(family_values).__name__}")
    unknown = sorted(set(values) - set(COMMON_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown TrainConfig key {unknown[0]!r}; known: {sorted(COMMON_FIELDS) + ['family_config']}"
        )
    name = values.get("family", TrainConfig.family)
    if not isinstance(name, str):
        raise TypeError(f"TrainConfig.family must be a string, got {type(name).__name__}")
    fam = get_family(name, module)
    dims = values.get("dims", TrainConfig.dims)
    defaults = fam.recipe(dims) if dims in (2, 3) else {}
    clean = {**defaults, **values}  # lists become tuples for tuple fields only (from_overrides)
    enums = {"data": DataSource, "supervision": SupervisionMode, "similarity": SimilarityName}
    for k, e in enums.items():
        if k in clean and not isinstance(clean[k], e):
            try:
                clean[k] = e(clean[k])
            except (TypeError, ValueError):
                raise ValueError(
                    f"TrainConfig.{k} must be one of {[m.value for m in e]}, got {clean[k]!r}"
                ) from None
    try:
        family_config = fam.make_config(family_values)
    except (TypeError, ValueError) as e:
        raise type(e)(f"family_config: {e}") from None
    return from_overrides(TrainConfig, clean, parse_strings=False, family_config=family_config)


MAX_RECIPE_BYTES = 1024**2


def load_config(path: str | Path) -> TrainConfig:
    """Read a recipe (``.json`` or ``.toml``); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file not found: {p}")
    if p.stat().st_size > MAX_RECIPE_BYTES:
        raise ValueError(
            f"config {p} is {p.stat().st_size:,} bytes, larger than {MAX_RECIPE_BYTES:,}: a recipe is a "
            "few hundred bytes"
        )
    if p.suffix.lower() not in (".json", ".toml"):
        raise ValueError(f"config {p}: a recipe is a .json or .toml file, got {p.suffix or 'no suffix'!r}")
    try:
        text = p.read_text(encoding="utf-8")
        values = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"cannot parse config {p}: {str(e)[:200]}") from None
    try:
        return config_from_dict(values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid config {p}: {e}") from None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """JSON-friendly dict (enums as strings, tuples as lists, the family config nested)."""
    fam = config.learned_family()
    out = {
        k: list(v) if isinstance(v, tuple) else v for k, v in to_dict(config).items() if k != "family_config"
    }
    out["family_config"] = fam.config_dict(config.family_config)
    if not fam.module().startswith("regcore."):
        out["family_module"] = fam.module()
    return out


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2), encoding="utf-8")


__all__ = [
    "TrainConfig",
    "DataSource",
    "SupervisionMode",
    "load_config",
    "save_config",
    "config_from_dict",
    "config_to_dict",
    "replace",
]
