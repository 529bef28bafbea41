"""Diffeomorphisms and folding: a velocity used directly as a displacement can fold;
integrating it by scaling and squaring (exp(v), Arsigny 2006) gives a smooth invertible map.

All fields ``(1, ndim, *S)`` in voxels, fixed -> moving (``phi(x) = x + u(x)``).
"""

from __future__ import annotations

import numpy as np
import torch

from regcore.spatial.warp import warp
from regcore.viz import jacobian_determinant_2d3d


def scaling_and_squaring(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """exp(v): u = v / 2^steps, then ``steps`` times u <- u + u o (id + u)."""
    if velocity.ndim not in (4, 5) or velocity.shape[1] != velocity.ndim - 2:
        raise ValueError(f"velocity must be (B, ndim, *S), got shape {tuple(velocity.shape)}")
    if not 0 <= int(steps) <= 20:
        raise ValueError(f"steps must be in [0, 20], got {steps}")
    try:  # the engine's implementation when present (same convention)
        from regcore.spatial.svf import integrate_svf
        return integrate_svf(velocity, steps=int(steps))
    except ImportError:
        pass
    u = velocity / 2 ** int(steps)
    for _ in range(int(steps)):
        u = u + warp(u, u)
    return u


def random_velocity(shape: tuple[int, int], amplitude: float, smoothness: float = 6.0, seed: int = 0) -> torch.Tensor:
    """Smooth random 2D velocity ``(1, 2, H, W)`` with max |v| = ``amplitude`` voxels."""
    from scipy.ndimage import gaussian_filter
    if amplitude < 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude}")
    rng = np.random.default_rng(seed)
    comps = [gaussian_filter(rng.standard_normal(shape), smoothness) for _ in range(2)]
    peak = max(float(np.abs(c).max()) for c in comps) or 1.0
    return torch.tensor(np.stack(comps)[None] / peak * amplitude, dtype=torch.float32)


def compare(shape=(96, 96), amplitude: float = 8.0, steps: int = 7, smoothness: float = 6.0, seed: int = 0) -> dict:
    """Folding of ``u = v`` vs ``u = exp(v)``: fields, det J maps, folding % and min det J."""
    v = random_velocity(shape, amplitude, smoothness, seed)
    out = {}
    for name, u in (("direct", v), ("exp", scaling_and_squaring(v, steps))):
        jac = jacobian_determinant_2d3d(u[0].numpy())
        out[name] = {"displacement": u[0].numpy(), "jacobian": jac,
                     "folding_percent": float((jac <= 0).mean() * 100), "min_jacobian": float(jac.min())}
    return out
