"""Checkpoints: config + weights (+ optimiser, RNG, progress) in one file, safe to load.

Everything stored is a plain tensor, dict, list, str or number, so files load with
``torch.load(weights_only=True)`` (no pickled code). Layout (``format`` = "reglab-checkpoint"):

``{"format", "version", "arch", "config", "spacing_mm", "train_shape", "state_dict",
"optimizer" (optional), "rng" (optional), "epoch", "step", "elapsed_s", "metrics"}``.
Shipped inference weights are the same format without optimiser/RNG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "reglab-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("arch", "state_dict", "spacing_mm")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not a RegLab checkpoint; the message names the file."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain data only) atomically: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint with ``weights_only=True``; raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many types on damaged files (RuntimeError, EOFError, IndexError...)
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); retrain or pick another file") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a RegLab checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"checkpoint {path} has version {data['version']}, newer than supported {VERSION}")
    return data


def build_net(data: dict[str, Any], device: str | torch.device = "cpu"):
    """The :class:`RegistrationNet` a loaded checkpoint describes, with its weights, in eval mode."""
    from regcore.nets.registration_net import RegistrationNet
    try:
        net = RegistrationNet(data["arch"])
        net.load_state_dict(data["state_dict"])
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"checkpoint weights do not fit its architecture {data.get('arch')}: "
                              f"{str(e).splitlines()[0]}") from None
    return net.to(device).eval()
