"""Shared inference for learned methods: load a checkpoint, prepare inputs like training, predict.

Inference mirrors training (:mod:`regcore.nets.inputs`): each image is resampled to the
model's training resolution (``spacing_mm`` stored in the checkpoint), robustly normalised to
[0, 1], zero-padded (centred) to a multiple of the network's divisor and at least to the training canvas
(``train_shape``); the predicted
displacement is cropped and resampled back to the fixed grid with its voxel units rescaled.
The result follows regcore's convention: displacement ``(1, ndim, *S)`` in fixed-grid voxels,
fixed -> moving, ``warped = moving o (id + u)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from regcore.image import Image
from regcore.methods.base import RegistrationResult, Timer, report, resolve_device
from regcore.nets.inputs import field_to_image_grid, normalise_intensity, plan_model_grid, to_model_grid
from regcore.spatial.warp import warp
from regcore.train.checkpoint import CheckpointError, build_net, load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[3]
MODELS_DIR = REPO_ROOT / "assets" / "models"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint path as given (absolute or relative to the cwd), else relative to the repo root."""
    if not str(path):
        raise ValueError("checkpoint is empty: give a weights file (e.g. from `regcore train`, runs/<id>/model.pt)")
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    alt = REPO_ROOT / p
    return alt if alt.is_file() else p


_CACHE: dict[tuple[str, float, str], tuple[Any, dict]] = {}


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[Any, dict]:
    """``(net, checkpoint dict)`` for a weights file, cached by (path, mtime, device)."""
    p = resolve_checkpoint(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    key = (str(p.resolve()), p.stat().st_mtime, str(device))
    if key not in _CACHE:
        data = load_checkpoint(p)
        _CACHE.clear()  # keep one model in memory
        _CACHE[key] = (build_net(data, device), data)
    return _CACHE[key]


def _image_to_model_affine(grid, device, dtype) -> torch.Tensor:
    """``(n+1, n+1)`` map image voxel -> model voxel (corner-aligned resize, then centring offset)."""
    n = len(grid.image_shape)
    t = torch.eye(n + 1, device=device, dtype=dtype)
    for i, (s, r, o) in enumerate(zip(grid.image_shape, grid.resized_shape, grid.offsets)):
        t[i, i] = (r - 1) / max(s - 1, 1)
        t[i, n] = o
    return t


def predict(net, data: dict, fixed: Image, moving: Image, device: torch.device) -> dict[str, torch.Tensor]:
    """Run ``net`` on a pair (same grid); returns ``displacement`` ``(1, n, *S)`` and ``affine`` when affine."""
    train_shape = data.get("train_shape")
    grid = plan_model_grid(fixed.shape, fixed.spacing, float(data["spacing_mm"]), net.divisor,
                           tuple(train_shape) if train_shape and len(train_shape) == fixed.ndim else None)
    fix = normalise_intensity(to_model_grid(fixed.batch()[:, :1].to(device), grid))
    mov = normalise_intensity(to_model_grid(moving.batch()[:, :1].to(device), grid))
    with torch.no_grad():
        out = net(mov, fix)
    result = {"displacement": field_to_image_grid(out["displacement"].float(), grid)}
    if "affine" in out:
        t = _image_to_model_affine(grid, device, torch.float32)
        n = fixed.ndim
        a = torch.eye(n + 1, device=device)
        a[:n] = out["affine"][0].float()
        result["affine"] = (torch.linalg.inv(t) @ a @ t)[:n]
    if "velocity" in out:
        result["velocity"] = field_to_image_grid(out["velocity"].float(), grid)
    result["model_shape"] = torch.tensor(grid.padded_shape)
    return result


def check_pair(fixed: Image, moving: Image) -> None:
    """Both Images, same grid (the caller resamples moving onto the fixed grid first)."""
    for name, im in (("fixed", fixed), ("moving", moving)):
        if not isinstance(im, Image):
            raise TypeError(f"{name} must be a regcore.image.Image, got {type(im).__name__}")
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed shape {fixed.shape} != moving shape {moving.shape}; resample moving onto the "
                         "fixed grid first (regcore.preprocess.resample_to)")


@dataclass
class LearnedMethod:
    """A registry method backed by a trained :class:`RegistrationNet` checkpoint.

    Attributes:
        name: registry name (goes into the result).
        model_kind: the ``arch["model"]`` the checkpoint must contain ("voxelmorph", ...).
    """

    name: str
    model_kind: str

    def register(self, fixed: Image, moving: Image, config: Any, progress=None) -> RegistrationResult:
        """Predict the fixed -> moving displacement in one forward pass (see module docstring)."""
        check_pair(fixed, moving)
        device = resolve_device(getattr(config, "device", "auto"))
        report(progress, 0.0, "loading model")
        net, data = load_model(config.checkpoint, device)
        arch = data["arch"]
        if arch["model"] != self.model_kind:
            raise ValueError(f"checkpoint {config.checkpoint} holds a {arch['model']!r} model, "
                             f"but method {self.name!r} needs {self.model_kind!r}")
        if arch["dims"] != fixed.ndim:
            raise ValueError(f"checkpoint {config.checkpoint} is a {arch['dims']}D model but the images are "
                             f"{fixed.ndim}D; pick a {fixed.ndim}D checkpoint")
        report(progress, 0.2, "predicting")
        with Timer(device) as timer:
            out = predict(net, data, fixed, moving, device)
            u = out["displacement"]
            warped = warp(moving.batch().to(device), u)
        report(progress, 1.0, "done")
        return RegistrationResult(
            method=self.name, fixed=fixed, moving=moving, warped=moving.with_data(warped[0].to(moving.data.device)),
            displacement=u.cpu(), affine=out["affine"].cpu() if "affine" in out else None,
            velocity=out["velocity"].cpu() if "velocity" in out else None,
            runtime_s=timer.runtime_s, peak_memory_mb=timer.peak_memory_mb, device=str(device), config=config,
            extras={"checkpoint": str(resolve_checkpoint(config.checkpoint)),
                    "model_shape": tuple(out["model_shape"].tolist()),
                    "trained_spacing_mm": float(data["spacing_mm"])})
