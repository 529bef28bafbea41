"""Stationary velocity fields: ``phi = exp(v)`` by scaling and squaring (the ONE implementation).

``v`` is ``(B, n, *S)`` (n = 2 or 3), component i along tensor axis i, in voxels of the fixed
grid; the result is the displacement ``u`` of ``phi = exp(v)``, ``phi(x) = x + u(x)``, which maps
fixed -> moving (``warped = moving o phi``). ``exp(-v)`` is its inverse.

Backends (same numbers up to float32 rounding, ``tests/test_spatial_transforms.py``):

* with autograd, on GPU, or without numba: ``u <- compose(u, u)`` with ``regcore.spatial.compose``
  (``grid_sample``; differentiable);
* on CPU without autograd (inference, the greedy classical methods): the fused numba
  compose kernel of ``regcore.spatial.warp_kernels`` (``u + u o (id + u)`` in one pass, linear
  interpolation, border padding), on two buffers per batch item.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from regcore.spatial import warp_kernels
from regcore.spatial.checks import check_field
from regcore.spatial.compose import compose
from regcore.spatial.lengths import max_vector_length

MAX_STEPS = 30


def squaring_steps(max_norm: float, target: float = 0.5, limit: int = 10) -> int:
    """Fewest squarings ``k`` with ``max_norm / 2**k <= target`` voxels (at most ``limit``; 0 when
    ``max_norm <= target``): the step count used when ``integrate_svf(..., steps=None)``."""
    if not max_norm > target:
        return 0
    return max(0, min(limit, math.ceil(math.log2(max(max_norm, 1e-6) / target))))


def integrate_svf(velocity: torch.Tensor, steps: int | None = 7) -> torch.Tensor:
    """Scaling and squaring: ``u_0 = v / 2**steps``; ``u <- u + u o (id + u)`` ``steps`` times.

    Args:
        velocity: ``(B, n, *S)`` stationary velocity in voxels of the fixed grid (n = 2 or 3).
        steps: number of squarings, an int in ``[0, 30]`` (0 returns ``v`` itself; 7 is enough when
            ``max|v| / 2**steps`` is well below one voxel), or None for :func:`squaring_steps` of the
            largest vector of ``v`` (at most 10).
    Returns:
        ``(B, n, *S)`` displacement of ``exp(v)`` in voxels, fixed -> moving; same dtype and device.
        Differentiable (the torch backend runs whenever autograd needs it).
    """
    check_field(velocity, "velocity")
    if steps is None:
        vmax = float(max_vector_length(velocity.detach()))
        steps = squaring_steps(vmax)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be None or an int in [0, {MAX_STEPS}], got {steps!r}")
    needs_autograd = torch.is_grad_enabled() and velocity.requires_grad
    if (
        not needs_autograd
        and warp_kernels.AVAILABLE
        and velocity.device.type == "cpu"
        and velocity.dtype in (torch.float32, torch.float64)
    ):
        return _integrate_compiled(velocity.detach(), steps)
    u = velocity / (2.0**steps)
    for _ in range(steps):
        u = compose(u, u)
    return u


def _integrate_compiled(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """CPU backend: numba ``warp_kernels.compose`` ping-pong on two buffers per batch item."""
    out = torch.empty_like(velocity, memory_format=torch.contiguous_format)
    threads = torch.get_num_threads()
    for b in range(velocity.shape[0]):
        u = (velocity[b] / (2.0**steps)).contiguous().numpy()
        spare = np.empty_like(u)
        for _ in range(steps):
            warp_kernels.compose(u, u, spare, threads)
            u, spare = spare, u
        out[b] = torch.from_numpy(u)
    return out
