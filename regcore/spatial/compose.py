"""Composition and inversion of dense displacements (voxels of the fixed grid).

Definitions (``phi_a(x) = x + u_a(x)``, every map fixed voxel -> moving voxel):

* ``compose(u_a, u_b)`` is the displacement of ``phi_a o phi_b`` (``phi_b`` applied FIRST):
  ``(phi_a o phi_b)(x) = phi_b(x) + u_a(phi_b(x))``, hence
  ``u = u_b + warp(u_a, u_b)`` (``u_a`` is sampled at the points ``phi_b`` reaches).
  In registration terms: warping by ``compose(u_a, u_b)`` equals warping by ``u_a``
  first and then warping that result by ``u_b``: ``m o phi_a o phi_b``.
* ``invert(u)`` returns ``v`` with ``phi o psi ~ id`` (``psi(x) = x + v(x)``), i.e.
  ``v(x) = -u(x + v(x))``, found by fixed-point iteration (converges when phi is smooth
  and ``|grad u| < 1``). ``psi o phi ~ id`` then holds too, away from the border.
"""

from __future__ import annotations

import torch

from regcore.spatial.checks import check_field
from regcore.spatial.lengths import vector_lengths
from regcore.spatial.warp import warp


def compose(u_outer: torch.Tensor, u_inner: torch.Tensor) -> torch.Tensor:
    """Displacement ``(B, n, *S)`` of ``phi_outer o phi_inner`` = ``u_inner + u_outer(x + u_inner)``.

    Outside the grid ``u_outer`` is extended by its border value. Differentiable in both.
    """
    check_field(u_outer, "u_outer")
    check_field(u_inner, "u_inner")
    if u_outer.shape[1:] != u_inner.shape[1:]:
        raise ValueError(
            f"u_outer {tuple(u_outer.shape)} and u_inner {tuple(u_inner.shape)} must share (n, *S)"
        )
    return u_inner + warp(u_outer, u_inner, padding_mode="border")


def invert(u: torch.Tensor, iterations: int = 30, tolerance: float = 1e-4) -> torch.Tensor:
    """Inverse displacement ``v`` ``(B, n, *S)`` voxels with ``u(x + v(x)) + v(x) ~ 0``.

    Args:
        u: ``(B, n, *S)`` displacement (fixed -> moving).
        iterations: maximum fixed-point iterations ``v <- -u(x + v)``.
        tolerance: stop when the largest update is below this (voxels).
    Returns:
        ``v``, the displacement of ``phi^-1`` (moving -> fixed) on the same grid.
    """
    check_field(u, "u")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 voxels, got {tolerance!r}")
    v = -u
    for _ in range(iterations):
        v_next = -warp(u, v, padding_mode="border")
        step = (v_next - v).abs().max()
        v = v_next
        if step.item() < tolerance:
            break
    return v


def inverse_consistency_error(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-voxel ``|compose(u, v)|`` in voxels, ``(B, *S)``: 0 when ``phi_u o phi_v = id``."""
    return vector_lengths(compose(u, v))
