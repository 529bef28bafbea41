"""The one interface every registration method implements, classical or learned.

``method.register(fixed, moving, config, progress)`` -> :class:`RegistrationResult`.

* ``fixed`` and ``moving`` are :class:`~regcore.image.Image` on the SAME grid (the caller
  resamples moving onto the fixed grid first: ``regcore.preprocess.resample_to``).
* The result's ``displacement`` ``(1, ndim, *S)`` is in voxels of the fixed grid and maps
  fixed -> moving: ``warped = moving o (id + displacement)``. Affine methods also fill
  ``affine`` (voxel-space ``(ndim, ndim+1)``, same direction) and still return the dense field.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from regcore.image import Image
from regcore.memory_peak import MemoryPeak


class RegistrationCancelled(RuntimeError):
    """Raised inside a method when the progress callback asks to stop."""


@dataclass
class Progress:
    """One progress report.

    Attributes:
        fraction: overall completion in [0, 1].
        message: short human text, e.g. "level 2/3, iter 40/100".
        losses: current loss terms by name (e.g. {"similarity": 0.12, "regularizer": 0.01}).
    """

    fraction: float
    message: str = ""
    losses: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], "bool | None"]
"""Called by methods as they run. Return ``False`` to cancel (method raises RegistrationCancelled)."""


def report(progress: ProgressCallback | None, fraction: float, message: str = "", **losses: float) -> None:
    """Helper for methods: call the callback and raise RegistrationCancelled if it returns False."""
    if progress is None:
        return
    if (
        progress(
            Progress(float(min(max(fraction, 0.0), 1.0)), message, {k: float(v) for k, v in losses.items()})
        )
        is False
    ):
        raise RegistrationCancelled(message or "cancelled")


@dataclass
class RegistrationResult:
    """What every method returns.

    Attributes:
        method: registry name.
        fixed: fixed image (the grid everything lives on).
        moving: moving image resampled onto the fixed grid (input to the method).
        warped: moving warped onto fixed, ``moving o phi``.
        displacement: ``(1, ndim, *S)`` float tensor, fixed -> moving, voxels of the fixed grid.
        affine: optional ``(ndim, ndim+1)`` voxel-space matrix (fixed voxel -> moving voxel).
        velocity: optional stationary velocity field ``(1, ndim, *S)`` (diffeomorphic methods).
        loss_history: per-iteration dicts of loss terms (for curves).
        runtime_s: wall time of ``register`` in seconds.
        peak_memory_mb: peak CUDA memory allocated (GPU) or most memory held at once above
            that at the start (CPU, :class:`regcore.memory_peak.MemoryPeak`), MiB.
        device: device string the method ran on.
        config: the config used (a dataclass instance).
        extras: method-specific outputs (e.g. inverse displacement).
    """

    method: str
    fixed: Image
    moving: Image
    warped: Image
    displacement: torch.Tensor
    affine: torch.Tensor | None = None
    velocity: torch.Tensor | None = None
    loss_history: list[dict[str, float]] = field(default_factory=list)
    runtime_s: float = 0.0
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    config: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    """Protocol for a registration method instance (built by a registry factory)."""

    def register(
        self, fixed: Image, moving: Image, config: Any, progress: ProgressCallback | None = None
    ) -> RegistrationResult: ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available else CPU; otherwise validate the given name."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but torch.cuda.is_available() is False; use 'cpu' or 'auto'"
        )
    return dev


class Timer:
    """Wall time and peak memory of a block: CUDA peak allocated on a GPU, else the most memory the block
    held at once above its start (:class:`regcore.memory_peak.MemoryPeak`), MiB."""

    def __init__(self, device: torch.device):
        self.device = device
        self.runtime_s = 0.0
        self.peak_memory_mb = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._memory = MemoryPeak().__enter__()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.runtime_s = time.perf_counter() - self._t0
        if self.device.type == "cuda":
            self.peak_memory_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._memory.__exit__(*exc)
            self.peak_memory_mb = self._memory.peak_mib
        return False
