"""Stationary velocity fields: ``phi = exp(v)`` by scaling and squaring.

``v`` is ``(B, n, *S)`` in voxels of the fixed grid; the result is the displacement of
``phi = exp(v)`` (fixed -> moving, ``warped = moving o phi``). ``exp(-v)`` is its inverse.
"""

from __future__ import annotations

import torch

from regcore.spatial.compose import compose


def integrate_svf(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: ``u_0 = v / 2**steps``; ``u <- compose(u, u)`` ``steps`` times.

    Args:
        velocity: ``(B, n, *S)`` stationary velocity in voxels (n = 2 or 3).
        steps: number of squarings (0 returns ``v`` itself); 7 is enough when
            ``max|v| / 2**steps`` is well below one voxel.
    Returns:
        ``(B, n, *S)`` displacement of ``exp(v)`` in voxels. Differentiable.
    """
    if not isinstance(velocity, torch.Tensor):
        raise TypeError(f"velocity must be a torch.Tensor, got {type(velocity).__name__}")
    if velocity.ndim not in (4, 5) or velocity.shape[1] != velocity.ndim - 2 or not velocity.is_floating_point():
        raise ValueError(f"velocity must be a float (B, ndim, *S) field with ndim 2 or 3, got "
                         f"{tuple(velocity.shape)} {velocity.dtype}")
    if not isinstance(steps, int) or not 0 <= steps <= 30:
        raise ValueError(f"steps must be an int in [0, 30], got {steps!r}")
    u = velocity / (2.0**steps)
    for _ in range(steps):
        u = compose(u, u)
    return u
