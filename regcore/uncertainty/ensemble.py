"""Ensembles: several registry methods and/or regularisation weights on the same pair.

Members disagree where the images do not pin the answer down (flat regions, weak edges); the
per-voxel variance of their displacements (:mod:`regcore.uncertainty.fields`) is the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regcore.image import Image
from regcore.uncertainty.members import Member, ProgressFn, register_displacement, say

REGULARISATION = {
    "demons": ("sigma_elastic", (1.0, 1.5, 2.5)),
    "sitk_demons": ("smoothing_sd", (1.0, 1.5, 2.5)),
    "fireants": ("smooth_warp_sigma", (0.25, 0.5, 1.0)),
    "svf": ("weight", (0.5, 1.0, 2.0)),
    "dense": ("weight", (0.5, 1.0, 2.0)),
}
"""Method -> (regularisation parameter, values tried): the knob that most changes the answer."""


def ensemble_members(methods: Sequence[str], weights_per_method: int = 3) -> list[Member]:
    """Members for ``methods``: each method with up to ``weights_per_method`` regularisation values
    (:data:`REGULARISATION`); a method without a known knob enters once with its defaults."""
    if not methods:
        raise ValueError("methods must name at least one registry method")
    if weights_per_method < 1:
        raise ValueError(f"weights_per_method must be >= 1, got {weights_per_method}")
    out: list[Member] = []
    for m in methods:
        if m in REGULARISATION:
            name, values = REGULARISATION[m]
            picks = values if weights_per_method >= len(values) else _spread(values, weights_per_method)
            out += [Member(m, {name: v}) for v in picks]
        else:
            out.append(Member(m))
    return out


def _spread(values: Sequence[float], k: int) -> list[float]:
    """``k`` values spread over ``values`` (ends first)."""
    if k == 1:
        return [values[len(values) // 2]]
    idx = sorted({round(i * (len(values) - 1) / (k - 1)) for i in range(k)})
    return [values[i] for i in idx]


def ensemble_samples(
    fixed: Image,
    moving: Image,
    members: Sequence[Member],
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Run every member on ``(fixed, moving)`` (moving on the fixed grid): ``(K, 1, n, *S)`` voxels, fixed -> moving."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    fields = []
    for k, member in enumerate(members):
        say(progress, k / len(members), f"ensemble {k + 1}/{len(members)}: {member.label}")
        fields.append(register_displacement(fixed, moving, member, device=device))
    say(progress, 1.0, "ensemble done")
    return torch.stack(fields)
