"""One member of an uncertainty estimate: a registry method run on one (possibly altered) pair.

Members are run through :func:`regcore.register.run_registration`, the same path as every other
registration, on images that already share the fixed grid. The result is the displacement
``(1, n, *S)`` in voxels of the fixed grid, fixed -> moving, on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from regcore.image import Image

ProgressFn = Callable[[float, str], Any]
"""``progress(fraction in [0, 1], message)``; the return value is ignored."""


@dataclass(frozen=True)
class Member:
    """A registry method with its config overrides, e.g. ``Member("demons", {"sigma_elastic": 2.5})``."""

    method: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"{self.method}({extra})" if extra else self.method


def register_displacement(
    fixed: Image, moving: Image, member: Member, *, device: str = "auto"
) -> torch.Tensor:
    """Register ``moving`` (on ``fixed``'s grid) to ``fixed`` with ``member``; ``(1, n, *S)`` voxels, CPU."""
    from regcore.register import run_registration

    result, _ = run_registration(fixed, moving, member.method, dict(member.overrides), device=device)
    return result.displacement.detach().float().cpu()


def on_fixed_grid(fixed: Image, image: Image | None) -> Image | None:
    """``image`` resampled onto ``fixed``'s grid through physical space (labels nearest); None stays None."""
    if image is None:
        return None
    from regcore.register import prepare_moving

    return prepare_moving(fixed, image)


def say(progress: ProgressFn | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), message)
