"""Checkpoints: config + weights (+ optimiser, RNG, progress) in one file, safe to load.

Everything stored is a plain tensor, dict, list, str or number, so files load with
``torch.load(weights_only=True)`` (no pickled code). Layout (``format`` = "reglab-checkpoint"):

``{"format", "version", "family", "family_module", "dims", "family_config", "config", "spacing_mm",
"train_shape", "state_dict", "optimizers" (optional), "rng" (optional), "epoch", "step", "elapsed_s",
"metrics"}``. ``family`` + ``family_config`` (the family's constructor arguments) + ``state_dict`` (of
the family's ``nn.ModuleDict``) rebuild the networks through the family registry, as voxelmorph's
``LoadableModel`` does. Shipped inference weights are the same format without optimiser/RNG.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "reglab-checkpoint"
VERSION = 2
REQUIRED_KEYS = ("family", "dims", "state_dict", "spacing_mm")


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
    from regcore.io.capture import library_output

    with library_output() as notes:  # torch's pickle warnings: summarised, never printed
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except (
            Exception
        ) as e:  # torch.load raises many types on damaged files (RuntimeError, EOFError, IndexError...)
            first = str(e).splitlines()[0] if str(e) else ""
            summary = f" {notes.summary()}" if notes.count else ""
            raise CheckpointError(
                f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {first[:300]}); "
                f"retrain or pick another file{summary}"
            ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a RegLab checkpoint (expected format {FORMAT!r})")
    if int(data.get("version", 0)) < VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {data.get('version')}, made by an older RegLab "
            f"(version {VERSION} is needed); retrain it with `regcore train`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {data['version']}, newer than supported {VERSION}"
        )
    _check_fields(path, data)
    return data


def _check_fields(path: Path, data: dict[str, Any]) -> None:
    """CheckpointError naming the file and the field when a stored value has the wrong type."""
    problems = []
    if not isinstance(data["family"], str) or not data["family"].isidentifier():
        problems.append(f"family = {data['family']!r} (expected a family name)")
    if isinstance(data["dims"], bool) or data["dims"] not in (2, 3):
        problems.append(f"dims = {data['dims']!r} (expected 2 or 3)")
    sd = data["state_dict"]
    if not isinstance(sd, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        problems.append("state_dict is not a mapping of parameter names to tensors")
    sp = data["spacing_mm"]
    if isinstance(sp, bool) or not isinstance(sp, (int, float)) or not math.isfinite(sp) or sp <= 0:
        problems.append(f"spacing_mm = {sp!r} (expected a voxel size > 0 mm)")
    if not isinstance(data.get("family_config") or {}, dict):
        problems.append("family_config is not a mapping")
    shape = data.get("train_shape")
    if shape is not None and (
        not isinstance(shape, (list, tuple))
        or len(shape) != data["dims"]
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 4096 for s in shape)
    ):
        problems.append(f"train_shape = {shape!r} (expected {data['dims']} sizes in 1..4096)")
    module = data.get("family_module")
    if module is not None and not isinstance(module, str):
        problems.append(f"family_module = {module!r} (expected a module name)")
    if problems:
        raise CheckpointError(f"checkpoint {path} is malformed: {problems[0]}")


def build_nets(data: dict[str, Any], device: str | torch.device = "cpu") -> torch.nn.ModuleDict:
    """The family networks a loaded checkpoint describes, with its weights, in eval mode."""
    from regcore.methods.learned.family import get_family

    family = get_family(str(data["family"]), data.get("family_module"))
    try:
        config = family.make_config(data.get("family_config") or {})
        expected = _meta_shapes(family, int(data["dims"]), config)
        stored = {k: tuple(v.shape) for k, v in data["state_dict"].items()}
        if expected is not None and expected != stored:
            diff = sorted(set(expected) ^ set(stored)) or [k for k in expected if expected[k] != stored[k]]
            raise ValueError(f"parameter {diff[0]!r} is missing, unexpected or of another shape")
        nets = family.build(int(data["dims"]), config)  # as large as the weights already in memory
        nets.load_state_dict(data["state_dict"])
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(
            f"checkpoint weights do not fit family {data['family']!r} with "
            f"{data.get('family_config')}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return nets.to(device).eval()


def _meta_shapes(family, dims: int, config) -> dict[str, tuple[int, ...]] | None:
    """Parameter shapes of the family's networks built on the meta device (no memory): a checkpoint whose
    family_config asks for giant networks is refused before anything is allocated. None when the family
    cannot be built on the meta device (e.g. it calls ``.item()`` while building)."""
    try:
        with torch.device("meta"):
            probe = family.build(dims, config)
    except (NotImplementedError, RuntimeError):
        return None
    return {k: tuple(v.shape) for k, v in probe.state_dict().items()}
