"""Diffeomorphisms and folding: a velocity used directly as a displacement can fold;
integrating it by scaling and squaring (exp(v), Arsigny 2006) gives a smooth invertible map.

All fields ``(1, ndim, *S)`` in voxels, fixed -> moving (``phi(x) = x + u(x)``). The engine's
operators do the work: ``regcore.spatial.svf.integrate_svf`` and ``regcore.spatial.jacobian``.
"""

from __future__ import annotations

import numpy as np
import torch

from regcore.spatial.jacobian import jacobian_determinant
from regcore.spatial.svf import integrate_svf


def random_velocity(
    shape: tuple[int, int], amplitude: float, smoothness: float = 6.0, seed: int = 0
) -> torch.Tensor:
    """Smooth random 2D velocity ``(1, 2, H, W)`` with max |v| = ``amplitude`` voxels."""
    from scipy.ndimage import gaussian_filter

    if amplitude < 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude}")
    rng = np.random.default_rng(seed)
    comps = [gaussian_filter(rng.standard_normal(shape), smoothness) for _ in range(2)]
    peak = max(float(np.abs(c).max()) for c in comps) or 1.0
    return torch.tensor(np.stack(comps)[None] / peak * amplitude, dtype=torch.float32)


def compare(
    shape=(96, 96), amplitude: float = 8.0, steps: int = 7, smoothness: float = 6.0, seed: int = 0
) -> dict:
    """Folding of ``u = v`` vs ``u = exp(v)``: fields, det J maps, folding % and min det J."""
    v = random_velocity(shape, amplitude, smoothness, seed)
    out = {}
    for name, u in (("direct", v), ("exp", integrate_svf(v, steps))):
        jac = jacobian_determinant(u.double())[0].numpy()
        out[name] = {
            "displacement": u[0].numpy(),
            "jacobian": jac,
            "folding_percent": float((jac <= 0).mean() * 100),
            "min_jacobian": float(jac.min()),
        }
    return out
