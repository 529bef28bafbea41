"""Registration pipelines: a rigid or affine stage before the chosen method, as ANTs and elastix run by default.

Deformable methods assume the anatomy is roughly aligned already. :func:`register_after_initial` first runs
regcore's intensity-based ``affine`` method (MI, started from the identity or the centres of mass; rigid or affine), resamples the
moving image with it, runs the chosen method on the result, and composes both into one displacement:

    u_total(x) = u_deformable(x) + u_affine(x + u_deformable(x))      (fixed -> moving, fixed-grid voxels)

so the warped image is one interpolation of the original moving image. ``result.extras["stages"]`` lists each
stage with its runtime.
"""

from __future__ import annotations

from collections.abc import Callable

from regcore.image import Image
from regcore.methods.base import Progress, ProgressCallback, RegistrationResult

INITIAL_STAGES = ("none", "rigid", "affine")
"""What may precede a method: nothing, a rigid or an affine stage."""

STAGE_SHARE = 0.3  # share of the progress bar the initial stage takes


def check_initial(initial: str) -> str:
    """``initial`` if it names a stage in :data:`INITIAL_STAGES`, else a ValueError naming the field."""
    if initial not in INITIAL_STAGES:
        raise ValueError(f"initial must be one of {', '.join(INITIAL_STAGES)}; got {initial!r}")
    return initial


def _scaled(
    progress: ProgressCallback | None, start: float, share: float, prefix: str
) -> ProgressCallback | None:
    """A callback that reports a stage's progress as ``start + share * fraction`` of the whole pipeline."""
    if progress is None:
        return None

    def callback(p: Progress):
        return progress(
            Progress(start + share * p.fraction, f"{prefix}: {p.message}" if p.message else prefix, p.losses)
        )

    return callback


def register_after_initial(
    initial: str,
    fixed: Image,
    moving: Image,
    register: Callable[[Image, Image, ProgressCallback | None], RegistrationResult],
    *,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> RegistrationResult:
    """Run an ``initial`` ("rigid"/"affine") stage, then ``register(fixed, moved, progress)`` on its output.

    ``fixed`` and ``moving`` share a grid. Returns the second stage's result with the composed displacement
    ``(1, n, *S)`` (fixed -> moving voxels), the moving image warped once by it, the summed runtime and
    ``extras["stages"]``."""
    from regcore.methods.registry import get
    from regcore.spatial.compose import compose
    from regcore.spatial.warp import warp

    if check_initial(initial) == "none":
        return register(fixed, moving, progress)
    spec = get("affine")
    first = spec.factory().register(
        fixed,
        moving,
        spec.make_config({"transform": initial, "device": device}),
        progress=_scaled(progress, 0.0, STAGE_SHARE, f"{initial} stage"),
    )
    moved = moving.with_data(first.warped.data.to(moving.data.device))
    second = register(fixed, moved, _scaled(progress, STAGE_SHARE, 1.0 - STAGE_SHARE, "deformable stage"))
    u_first = first.displacement.to(second.displacement.device, second.displacement.dtype)
    total = compose(u_first, second.displacement)
    warped = warp(moving.batch().to(total.device), total)
    stages = [
        {"stage": initial, "method": "affine", "runtime_s": float(first.runtime_s)},
        {"stage": "deformable", "method": second.method, "runtime_s": float(second.runtime_s)},
    ]
    second.displacement = total
    second.warped = moving.with_data(warped[0].to(moving.data.device), name=second.warped.name)
    second.affine = None
    second.velocity = None  # the velocity belongs to the second stage alone
    second.runtime_s = float(first.runtime_s + second.runtime_s)
    second.extras["stages"] = stages
    second.extras["initial_affine"] = first.affine
    return second
