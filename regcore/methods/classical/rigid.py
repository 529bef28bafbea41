"""Intensity-based rigid registration (rotation + translation; 6 dof in 3D, 3 in 2D).

The optimiser of :mod:`regcore.methods.classical.affine` (multi-resolution Adam in a normalised mm
frame, start from the identity or the centres of mass) with the transform kind fixed to rigid by default. The
result's ``affine`` is the ``(ndim, ndim+1)`` voxel matrix fixed voxel -> moving voxel, and its
displacement ``(1, ndim, *S)`` is in fixed voxels, fixed -> moving.
"""

from __future__ import annotations

from dataclasses import dataclass

from regcore.config import param
from regcore.methods.classical.affine import AffineConfig, AffineMethod, TransformKind
from regcore.methods.registry import Family, MethodSpec, register_method


@dataclass(frozen=True)
class RigidConfig(AffineConfig):
    transform: TransformKind = param(
        TransformKind.RIGID, "Rigid (rotation + translation) or full affine.", choices=TransformKind
    )


class RigidMethod(AffineMethod):
    """Rigid registration (see module docstring)."""

    name = "rigid"
    config_cls = RigidConfig


SPEC_RIGID = register_method(
    MethodSpec(
        name="rigid",
        title="Rigid (intensity-based)",
        config_cls=RigidConfig,
        factory=RigidMethod,
        family=Family.AFFINE,
        description="Rotation + translation by multi-resolution Adam; MI by default, started from the identity or the "
        "centres of mass, whichever MI prefers.",
    )
)
