"""TrainConfig: everything a training run needs, typed and UI-describable.

Saved as ``runs/<id>/config.json`` (:func:`save_config`) and read back with
:func:`load_config` (JSON, or TOML for hand-written recipes). Unknown keys or values outside
a field's range/choices raise ValueError naming the field.
"""

from __future__ import annotations

import enum
import json
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from regcore.config import from_overrides, param, to_dict


class ModelKind(enum.StrEnum):
    VOXELMORPH = "voxelmorph"
    TRANSMORPH = "transmorph"
    AFFINE = "affine"


class DataSource(enum.StrEnum):
    BRAIN = "brain"          # regcore.data sample brain pairs
    SHAPES = "shapes"        # SynthMorph-style random label maps, generated on the fly
    MIXED = "mixed"          # alternate brain and shapes batches
    FOLDER = "folder"        # a folder or manifest CSV (data_path), via regcore.data.load_folder/manifest


class SupervisionMode(enum.StrEnum):
    UNSUPERVISED = "unsupervised"   # similarity + regulariser
    WEAK = "weak"                   # + Dice of warped one-hot labels
    FULL = "full"                   # MSE to the ground-truth displacement (+ regulariser)
    DUAL = "dual"                   # ground-truth field + similarity (+ regulariser)


class SimilarityName(enum.StrEnum):
    LNCC = "lncc"
    NCC = "ncc"
    MSE = "mse"


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. Sizes are voxels of the model grid; spacing in mm."""

    model: ModelKind = param(ModelKind.VOXELMORPH, "Network: VoxelMorph U-Net, TransMorph (Swin) or affine CNN.")
    diffeomorphic: bool = param(False, "Dense models: predict a velocity field integrated by scaling and squaring.")
    dims: int = param(2, "Spatial dimensions of the training data.", choices=(2, 3))
    data: DataSource = param(DataSource.SHAPES, "Training pairs: sample brains, synthetic shapes, both, or a folder.")
    data_path: str = param("", "Folder or manifest CSV (data = folder only).", advanced=True)
    spacing_mm: float = param(2.0, "Model resolution in mm per voxel; inputs are resampled to it.", range=(0.5, 8.0))
    train_shape: tuple[int, ...] = param((96, 112), "Model-grid shape (voxels) pairs are padded/cropped to; "
                                         "each size a multiple of 32 for TransMorph, 16 otherwise.")
    supervision: SupervisionMode = param(SupervisionMode.UNSUPERVISED, "Loss: unsupervised, weak (labels), full "
                                         "(true fields) or dual (field + similarity).")
    similarity: SimilarityName = param(SimilarityName.LNCC, "Image similarity term.")
    similarity_weight: float = param(1.0, "Weight of the image similarity.", range=(0.0, 100.0))
    regularizer_weight: float = param(1.0, "Weight of the diffusion regulariser (mean squared gradient, voxels).",
                                      range=(0.0, 100.0))
    dice_weight: float = param(1.0, "Weight of the soft Dice term (weak supervision).", range=(0.0, 100.0))
    field_weight: float = param(0.1, "Weight of the ground-truth field MSE (voxels^2; full/dual).", range=(0.0, 100.0))
    epochs: int = param(10, "Number of epochs.", range=(1, 10000))
    steps_per_epoch: int = param(50, "Optimiser steps per epoch.", range=(1, 100000))
    batch_size: int = param(4, "Pairs per step.", range=(1, 256))
    lr: float = param(1e-3, "Adam learning rate.", range=(1e-6, 1.0))
    augment: bool = param(True, "Random flips and small affine jitter of training pairs.")
    intensity_augment: bool = param(True, "Random gamma, contrast and noise so models generalise across scanners.")
    synthetic_pool: int = param(0, "Synthetic shapes: pre-generate this many pairs and draw from them "
                                "(0 = a fresh pair every draw; a pool is much faster on CPU).", range=(0, 100000))
    val_pairs: int = param(4, "Fixed validation pairs (Dice, folding) evaluated every epoch.", range=(1, 64))
    seed: int = param(0, "Random seed (weights, data, augmentation).", range=(0, 2**31 - 1))
    time_limit_min: float = param(0.0, "Stop (as finished) after this many minutes of training; 0 = no limit.",
                                  range=(0.0, 100000.0), advanced=True)
    device: str = param("auto", "auto = CUDA when available (with AMP), else CPU.", choices=("auto", "cpu", "cuda"))
    threads: int = param(0, "CPU threads for torch (0 = torch default).", range=(0, 256), advanced=True)
    init_checkpoint: str = param("", "Start from these weights (fine-tuning); empty = random init.", advanced=True)

    def __post_init__(self) -> None:
        if len(self.train_shape) != self.dims:
            raise ValueError(f"TrainConfig.train_shape must have {self.dims} entries (dims), got {self.train_shape}")
        divisor = 32 if self.model == ModelKind.TRANSMORPH else 16
        if any(s % divisor or s < divisor for s in self.train_shape):
            raise ValueError(f"TrainConfig.train_shape sizes must be positive multiples of {divisor} for "
                             f"{self.model}, got {self.train_shape}")
        if self.data == DataSource.FOLDER and not self.data_path:
            raise ValueError("TrainConfig.data_path is required when data = 'folder'")
        if self.diffeomorphic and self.model == ModelKind.AFFINE:
            raise ValueError("TrainConfig.diffeomorphic applies to dense models, not 'affine'")

    def arch(self) -> dict[str, Any]:
        """Architecture dict for :class:`regcore.nets.registration_net.RegistrationNet`."""
        return {"model": str(self.model), "dims": self.dims, "diffeomorphic": self.diffeomorphic, "int_steps": 7,
                "net": default_net_kwargs(self.model, self.dims)}


def default_net_kwargs(model: str, dims: int) -> dict[str, Any]:
    """Small default widths (CPU-friendly; a few MB of weights)."""
    if model == ModelKind.VOXELMORPH:
        return {"channels": [16, 32, 32, 32, 32, 32, 32, 32] if dims == 2 else [8, 16, 16, 16, 16, 16, 16, 16],
                "final_channels": [16, 16] if dims == 2 else [8, 8]}
    if model == ModelKind.TRANSMORPH:
        return {"embed_dim": 12, "window": 4, "depths": [1, 1, 1, 1], "heads": [2, 2, 4, 4],
                "skip_channels": 16 if dims == 2 else 8}
    return {"channels": [16, 32, 32, 64, 64]}


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a validated TrainConfig from JSON-like values (strings/lists accepted)."""
    if not isinstance(values, dict):
        raise TypeError(f"config must be a mapping, got {type(values).__name__}")
    names = {f.name for f in fields(TrainConfig)}
    clean = {}
    for k, v in values.items():
        if k not in names:
            raise ValueError(f"unknown TrainConfig key {k!r}; known: {sorted(names)}")
        clean[k] = tuple(v) if isinstance(v, list) else v
    enums = {"model": ModelKind, "data": DataSource, "supervision": SupervisionMode, "similarity": SimilarityName}
    for k, e in enums.items():
        if k in clean and not isinstance(clean[k], e):
            try:
                clean[k] = e(clean[k])
            except ValueError:
                raise ValueError(f"TrainConfig.{k} must be one of {[m.value for m in e]}, got {clean[k]!r}") from None
    if "dims" in clean and "train_shape" not in clean and clean["dims"] == 3:
        clean["train_shape"] = (64, 80, 64)
    return from_overrides(TrainConfig, clean)


def load_config(path: str | Path) -> TrainConfig:
    """Read a recipe (``.json`` or ``.toml``); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file not found: {p}")
    try:
        text = p.read_text()
        values = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot parse config {p}: {e}") from None
    try:
        return config_from_dict(values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid config {p}: {e}") from None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """JSON-friendly dict (enums as strings, tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in to_dict(config).items()}


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2))


__all__ = ["TrainConfig", "ModelKind", "DataSource", "SupervisionMode", "SimilarityName", "load_config",
           "save_config", "config_from_dict", "config_to_dict", "default_net_kwargs", "replace"]
