"""Inference for every learned family: load its networks, prepare inputs like training, predict.

Inference mirrors training (:mod:`regcore.nets.inputs`): each image is resampled to the
model's training resolution (``spacing_mm`` stored in the checkpoint), robustly normalised to
[0, 1], zero-padded (centred) to a multiple of the family's divisor and at least to the training
canvas (``train_shape``); the predicted displacement is cropped and resampled back to the fixed
grid with its voxel units rescaled. Families without training (per-pair optimisers) run on the
image grid itself. The result follows regcore's convention: displacement ``(1, ndim, *S)`` in
fixed-grid voxels, fixed -> moving, ``warped = moving o (id + u)``.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from regcore.image import Geometry, Image
from regcore.methods.base import RegistrationResult, Timer, report, resolve_device
from regcore.methods.learned.refine import refine_displacement
from regcore.nets.inputs import (
    ModelGrid,
    field_to_image_grid,
    map_to_image_grid,
    normalise_intensity,
    plan_model_grid,
    to_model_grid,
)
from regcore.nets.orientation import AxisMap, axis_map
from regcore.spatial.warp import warp
from regcore.train.checkpoint import CheckpointError, build_nets, load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[3]
MODELS_DIR = REPO_ROOT / "assets" / "models"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint path as given (absolute or relative to the cwd), else relative to the repo root."""
    if not str(path):
        raise ValueError(
            "checkpoint is empty: give a weights file (e.g. from `regcore train`, runs/<id>/model.pt)"
        )
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    alt = REPO_ROOT / p
    return alt if alt.is_file() else p


_CACHE: dict[tuple[str, float, str], tuple[Any, dict]] = {}


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.ModuleDict, dict]:
    """``(networks, checkpoint dict)`` for a weights file, cached by (path, mtime, device)."""
    p = resolve_checkpoint(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    key = (str(p.resolve()), p.stat().st_mtime, str(device))
    entry = _CACHE.get(key)  # a local reference: another thread (browser session) may swap the cache
    if entry is None:
        data = load_checkpoint(p)
        entry = (build_nets(data, device), data)
        _CACHE.clear()  # keep one model in memory
        _CACHE[key] = entry
    return entry


def image_to_model_affine(grid: ModelGrid, device, dtype) -> torch.Tensor:
    """``(n+1, n+1)`` map image voxel -> model voxel (corner-aligned resize, then centring offset)."""
    n = len(grid.image_shape)
    t = torch.eye(n + 1, device=device, dtype=dtype)
    for i, (s, r, o) in enumerate(zip(grid.image_shape, grid.resized_shape, grid.offsets)):
        t[i, i] = (r - 1) / max(s - 1, 1)
        t[i, n] = o
    return t


def affine_to_image_grid(affine: torch.Tensor, grid: ModelGrid) -> torch.Tensor:
    """A model-grid voxel affine ``(n, n+1)`` (fixed voxel -> moving voxel) as the same map between image voxels."""
    n = len(grid.image_shape)
    t = image_to_model_affine(grid, affine.device, torch.float32)
    a = torch.eye(n + 1, device=affine.device)
    a[:n] = affine.detach().float()
    return (torch.linalg.inv(t) @ a @ t)[:n].cpu()


def mechanism_to_image_grid(pred: Any, grid: ModelGrid) -> dict[str, Any]:
    """The mechanism a family shows (see :class:`~regcore.methods.learned.family.Prediction`) on the image grid:
    ``trajectory`` (displacements ``(1, n, *S)``), ``maps`` (name -> ``(1, 1, *S)``) and ``episode`` steps whose
    ``affine`` becomes an image-voxel affine ``(n, n+1)``. Everything on the CPU."""
    out: dict[str, Any] = {}
    if pred.trajectory:
        out["trajectory"] = [field_to_image_grid(u.detach().float(), grid).cpu() for u in pred.trajectory]
    maps = pred.extras.get("maps")
    if maps:
        out["maps"] = {
            str(k): map_to_image_grid(
                v.detach().float().reshape(1, 1, *v.shape[-len(grid.image_shape) :]), grid
            ).cpu()
            for k, v in maps.items()
        }
    episode = pred.extras.get("episode")
    if episode:
        out["episode"] = [
            {**step, "affine": affine_to_image_grid(step["affine"].reshape(len(grid.image_shape), -1), grid)}
            if torch.is_tensor(step.get("affine"))
            else dict(step)
            for step in episode
        ]
    return out


def training_orientation(image: Image, data: dict) -> AxisMap | None:
    """The map from ``image``'s voxel axes to the orientation a 3D checkpoint was trained in (``data["orientation"]``),
    None when they agree, the checkpoint records none, or the images are 2D (slice axes carry no anatomy)."""
    target = data.get("orientation") if data else None
    if not target or image.ndim != 3:
        return None
    amap = axis_map(image.geometry.orientation_codes(), str(target))
    return None if amap.is_identity else amap


def reorient_image(image: Image, amap: AxisMap) -> Image:
    """``image`` with its voxel axes permuted and flipped by ``amap`` (exact; the geometry becomes an identity grid)."""
    data = amap.image(image.data[None])[0]
    return Image(data, Geometry.identity(tuple(data.shape[1:]), amap.spacing(image.spacing)), name=image.name)


def mechanism_back(mech: dict[str, Any], amap: AxisMap, shape: tuple[int, ...]) -> dict[str, Any]:
    """:func:`mechanism_to_image_grid`'s output on the reoriented grid, brought back to the image's own axes."""
    out = dict(mech)
    if "trajectory" in out:
        out["trajectory"] = [amap.field_back(u) for u in out["trajectory"]]
    if "maps" in out:
        out["maps"] = {k: amap.map_back(v) for k, v in out["maps"].items()}
    if "episode" in out:
        out["episode"] = [
            {**st, "affine": amap.affine_back(st["affine"], shape)}
            if torch.is_tensor(st.get("affine"))
            else st
            for st in out["episode"]
        ]
    return out


def check_same_grid(fixed: Image, moving: Image) -> None:
    """Both Images on the same grid (the caller resamples moving onto the fixed grid first)."""
    for name, im in (("fixed", fixed), ("moving", moving)):
        if not isinstance(im, Image):
            raise TypeError(f"{name} must be a regcore.image.Image, got {type(im).__name__}")
    if fixed.shape != moving.shape:
        raise ValueError(
            f"fixed shape {fixed.shape} != moving shape {moving.shape}; resample moving onto the "
            "fixed grid first (regcore.preprocess.resample_to)"
        )


@dataclass
class LearnedMethod:
    """The registry method of a learned family (built by :func:`register_family`).

    Attributes:
        family: the :class:`~regcore.methods.learned.family.LearnedFamily` instance.
    """

    family: Any

    def default_checkpoint(self, dims: int) -> Path:
        """Where the shipped weights of this family for ``dims``-D images live: ``assets/models/<name><dims>d.pt``."""
        return MODELS_DIR / f"{self.family.name}{dims}d.pt"

    def checkpoint_path(self, settings: Any, dims: int) -> Path:
        """The weights a registration uses: ``settings.checkpoint``, or the shipped default for ``dims``."""
        if getattr(settings, "checkpoint", ""):
            return resolve_checkpoint(settings.checkpoint)
        default = self.default_checkpoint(dims)
        if not default.is_file():
            raise CheckpointError(
                f"no shipped {dims}D weights for {self.family.name!r} ({default.relative_to(REPO_ROOT)}); "
                f"train a model (`regcore train`, the Train page) and pass its model.pt as checkpoint"
            )
        return default

    def networks(
        self, settings: Any, dims: int, device: torch.device
    ) -> tuple[torch.nn.ModuleDict, Any, dict]:
        """``(networks, family config, checkpoint data)``; a family without training builds fresh networks."""
        fam = self.family
        if not fam.needs_training:
            config = fam.make_config({})
            return fam.build(dims, config).to(device), config, {}
        path = self.checkpoint_path(settings, dims)
        nets, data = load_model(path, device)
        if data["family"] != fam.name:
            raise ValueError(
                f"checkpoint {path} holds a {data['family']!r} model, "
                f"but method {fam.name!r} needs a {fam.name!r} checkpoint"
            )
        if int(data["dims"]) != dims:
            raise ValueError(
                f"checkpoint {path} is a {data['dims']}D model but the images are "
                f"{dims}D; pick a {dims}D checkpoint"
            )
        return nets, fam.make_config(data.get("family_config")), data

    def model_inputs(
        self, fixed: Image, moving: Image, fam_config: Any, data: dict, device: torch.device
    ) -> tuple[ModelGrid, torch.Tensor, torch.Tensor]:
        """``(grid, fixed, moving)``: the model grid planned from the checkpoint (training spacing and canvas,
        the family's divisor) and both images on it, ``(1, 1, *padded)`` normalised to [0, 1]."""
        train_shape = data.get("train_shape")
        spacing = None if getattr(self.family, "native_grid", False) else data.get("spacing_mm")
        grid = plan_model_grid(
            fixed.shape,
            fixed.spacing,
            float(spacing) if spacing else None,
            self.family.divisor(fixed.ndim, fam_config),
            tuple(train_shape) if train_shape and len(train_shape) == fixed.ndim else None,
        )
        fix = normalise_intensity(to_model_grid(fixed.batch()[:, :1].to(device), grid))
        mov = normalise_intensity(to_model_grid(moving.batch()[:, :1].to(device), grid))
        return grid, fix, mov

    def register(self, fixed: Image, moving: Image, config: Any, progress=None) -> RegistrationResult:
        """Predict the fixed -> moving displacement (see the module docstring)."""
        check_same_grid(fixed, moving)
        fam = self.family
        device = resolve_device(getattr(config, "device", "auto"))
        report(progress, 0.0, "loading model")
        nets, fam_config, data = self.networks(config, fixed.ndim, device)
        report(progress, 0.2, "predicting")
        amap = training_orientation(fixed, data)
        with Timer(device) as timer:
            t0 = time.perf_counter()
            grid, fix, mov = self.model_inputs(
                *(
                    (fixed, moving)
                    if amap is None
                    else (reorient_image(fixed, amap), reorient_image(moving, amap))
                ),
                fam_config,
                data,
                device,
            )
            nets.eval()
            with nullcontext() if getattr(fam, "predict_needs_grad", False) else torch.no_grad():
                pred = fam.predict(nets, mov, fix, fam_config, config)
            u = field_to_image_grid(pred.displacement.detach().float(), grid)
            if amap is not None:
                u = amap.field_back(u)
            predict_s = time.perf_counter() - t0
            if getattr(config, "refine_iterations", 0):
                report(progress, 0.5, f"instance optimisation ({config.refine_iterations} steps)")
                u = refine_displacement(
                    fixed.batch()[:, :1].to(device),
                    moving.batch()[:, :1].to(device),
                    u,
                    config.refine_iterations,
                    smoothing=config.refine_smoothing,
                    spacing=fixed.spacing,
                )
            warped = warp(moving.batch().to(device), u)
        report(progress, 0.9, "mechanism views")
        t_explain = time.perf_counter()
        with torch.no_grad():
            pred = fam.explain(nets, mov, fix, fam_config, config, pred)
        explain_s = time.perf_counter() - t_explain
        report(progress, 1.0, "done")
        mechanism = mechanism_to_image_grid(pred, grid)
        extras: dict[str, Any] = {
            "model_shape": grid.padded_shape,
            "predict_s": predict_s,
            "refine_s": timer.runtime_s - predict_s,
            "explain_s": explain_s,
            **pred.extras,
            **(mechanism if amap is None else mechanism_back(mechanism, amap, fixed.shape)),
        }
        if data:
            extras.update(
                checkpoint=str(self.checkpoint_path(config, fixed.ndim)),
                trained_spacing_mm=float(data["spacing_mm"]),
            )
        if amap is not None:
            extras["reoriented"] = f"{fixed.geometry.orientation_codes()} -> {data['orientation']}"
        keep = (lambda x, **_: x) if amap is None else amap.field_back
        if pred.variance is not None:
            variance = field_to_image_grid(pred.variance.detach().float(), grid)
            extras["variance"] = keep(variance, signed=False).cpu()
        affine = None if pred.affine is None else affine_to_image_grid(pred.affine[0], grid)
        if affine is not None and amap is not None:
            affine = amap.affine_back(affine, fixed.shape)
        velocity = (
            None
            if pred.velocity is None
            else keep(field_to_image_grid(pred.velocity.detach().float(), grid)).cpu()
        )
        return RegistrationResult(
            method=fam.name,
            fixed=fixed,
            moving=moving,
            warped=moving.with_data(warped[0].to(moving.data.device)),
            displacement=u.cpu(),
            affine=affine,
            velocity=velocity,
            runtime_s=timer.runtime_s,
            peak_memory_mb=timer.peak_memory_mb,
            device=str(device),
            config=config,
            extras=extras,
        )
