"""fireants' ``preset="auto"``: the pyramid and schedule chosen from the image's size and spacing.

:func:`resolve_preset` turns an auto config into the custom one that runs on an image (the method calls it first);
:func:`auto_settings` names those values (the Register page shows them, ``MethodSpec.auto_settings``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from regcore.methods.classical.pyramid import auto_levels

if TYPE_CHECKING:
    from regcore.methods.classical.fireants import FireANTsConfig

AUTO_SCHEDULES = {
    3: {"iterations": (100, 50, 10), "step_size": 1.0, "smooth_grad_sigma": 0.875, "window": 7},
    2: {"iterations": (100, 80, 50), "step_size": 0.5, "smooth_grad_sigma": 1.0, "window": 11},
}
"""Per image dimension, for the full 3-level pyramid (fewer levels keep the finest iteration counts).
Tuned on the tune split of ``benchmarks/dev_benchmark.py`` (2D OASIS slices, Adam steps) and on OASIS 3D
(the only labelled 3D pair, both directions, gradient steps: ~9 s per pair on 2 cores, 10 full-resolution
iterations; grid in ``benchmarks/README.md``). A 5-voxel window in 2D gave 0.04 lower Dice on the tune slices."""


def resolve_preset(
    config: FireANTsConfig, shape: tuple[int, ...], spacing: tuple[float, ...] | None = None
) -> FireANTsConfig:
    """The config with ``preset="auto"`` replaced by the schedule for an image of ``shape`` voxels
    (2D or 3D; ``spacing`` in mm per axis shapes its pyramid); a ``custom`` config is returned unchanged."""
    if config.preset != "auto":
        return config
    levels = auto_levels(shape, spacing=spacing)
    schedule = dict(AUTO_SCHEDULES[len(shape)])
    schedule["iterations"] = schedule["iterations"][-len(levels) :]
    return replace(config, preset="custom", levels=levels, **schedule)


def auto_settings(config: FireANTsConfig, shape: tuple[int, ...], spacing: tuple[float, ...]) -> dict:
    """The schedule ``preset="auto"`` runs on an image of ``shape`` voxels (``spacing`` mm); {} for custom."""
    if config.preset != "auto":
        return {}
    resolved = resolve_preset(config, shape, spacing)
    return {k: getattr(resolved, k) for k in ("levels", *AUTO_SCHEDULES[3])}
