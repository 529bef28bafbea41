"""Probabilistic networks: draw displacement samples from the ``prob_voxelmorph`` family.

The network predicts a mean and a log-variance of a stationary velocity per voxel; each sample is
``exp(mean + std * noise)`` (scaling and squaring), see :mod:`regcore.methods.learned.prob_voxelmorph`.
Inputs are prepared exactly as :class:`regcore.methods.learned.inference.LearnedMethod` prepares them
(resample to the training spacing, normalise, pad), and every sample is brought back to the fixed
grid with its voxel units rescaled: ``(K, 1, n, *S)`` voxels of the fixed grid, fixed -> moving.

An empty ``checkpoint`` uses the shipped 2D weights (``assets/models/prob_voxelmorph2d.pt``); for other data
train one (``regcore train`` with family ``prob_voxelmorph``, or the Train page) and pass its ``model.pt``.
"""

from __future__ import annotations

import dataclasses

import torch

from regcore.image import Image
from regcore.uncertainty.members import ProgressFn, say

FAMILY = "prob_voxelmorph"


def sampling_samples(
    fixed: Image,
    moving: Image,
    *,
    checkpoint: str = "",
    samples: int = 8,
    family: str = FAMILY,
    device: str = "auto",
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """``samples`` fields drawn from a probabilistic network (moving already on the fixed grid)."""
    from regcore.methods.base import resolve_device
    from regcore.methods.learned.inference import check_same_grid
    from regcore.methods.registry import get
    from regcore.nets.inputs import field_to_image_grid
    from regcore.train.checkpoint import CheckpointError

    check_same_grid(fixed, moving)
    if samples < 2:
        raise ValueError(f"samples must be >= 2 to estimate a variance, got {samples}")
    spec = get(family)
    if "samples" not in {f.name for f in dataclasses.fields(spec.config_cls)}:
        raise ValueError(f"method {family!r} draws no samples; use a probabilistic family such as {FAMILY!r}")
    settings = spec.make_config({"checkpoint": checkpoint, "samples": samples})
    method = spec.factory()
    dev = resolve_device(device)
    say(progress, 0.0, "loading model")
    try:
        nets, fam_config, data = method.networks(settings, fixed.ndim, dev)
    except CheckpointError as e:
        raise ValueError(f"the sampling estimator needs a trained {family!r} checkpoint: {e}") from None
    fam = method.family
    grid, fix, mov = method.model_inputs(fixed, moving, fam_config, data, dev)
    say(progress, 0.3, f"drawing {samples} samples")
    nets.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        pred = fam.predict(nets, mov, fix, fam_config, settings)
    if pred.samples is None:
        raise ValueError(f"method {family!r} returned no samples")
    out = torch.stack([field_to_image_grid(s.float(), grid).cpu() for s in pred.samples])
    say(progress, 1.0, "sampling done")
    return out


def shipped_checkpoint(dims: int, family: str = FAMILY) -> bool:
    """Whether RegLab ships ``family`` weights for ``dims``-D images (used when ``checkpoint`` is empty)."""
    from regcore.methods.registry import get

    return get(family).factory().default_checkpoint(dims).is_file()


def trained_checkpoints(dims: int, family: str = FAMILY) -> list[str]:
    """Weights of finished or checkpointed training runs (``regcore.train.jobs``) of ``family`` for
    ``dims``-D images, newest first; empty when there are none (or no runs folder)."""
    from regcore.train import jobs

    try:
        runs = jobs.list_runs()
    except OSError:
        return []
    out = []
    for run in runs:
        cfg = run.get("config") or {}
        if cfg.get("family") == family and str(cfg.get("dims")) == str(dims):
            weights = jobs.weights_path(run["run_id"])
            if weights is not None:
                out.append(str(weights))
    return out
