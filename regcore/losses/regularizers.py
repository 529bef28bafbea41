"""Smoothness and plausibility penalties on a displacement field: ``reg(u) -> scalar``.

``u`` is ``(B, ndim, *S)``, component i along tensor axis i, in voxels of the fixed grid
(``phi(x) = x + u(x)`` maps fixed -> moving). Derivatives are finite differences in voxel
units; every penalty is a mean over batch, components and voxels (so it does not grow with
image size) and is differentiable. Diffusion and bending are sums of squared stencils with a hand-written adjoint
(:mod:`regcore.losses.stencils`: autograd through the slices zero-filled a field-sized tensor per slice).

* diffusion: ``sum_i mean((d_i u)^2)`` (membrane energy; forward differences by default,
  ``scheme="central"`` equals ``monai.losses.DiffusionLoss``).
* tv: ``sum_i mean(|d_i u|)`` with forward differences (total variation, allows sharp edges).
* bending: ``mean(sum_i (d_ii u)^2 + 2 sum_{i<j} (d_ij u)^2)``, equal to
  ``monai.losses.BendingEnergyLoss(normalize=False)``; zero for any affine field.
* folding: ``mean(relu(-det J_phi))``: only folded voxels are penalised (det J from
  ``regcore.spatial.jacobian``).
* inverse consistency: ``mean |u_fwd(x) + u_bwd(x + u_fwd(x))|^2`` (voxels^2).
"""

from __future__ import annotations

import torch
from torch import nn

from regcore.losses.stencils import Terms, stencil_energy
from regcore.spatial.checks import check_field
from regcore.spatial.compose import compose
from regcore.spatial.jacobian import jacobian_determinant


def _index(n: int, axis: int, start: int | None, stop: int | None, inner: bool = False) -> tuple[slice, ...]:
    """Index of a ``(B, C, *S)`` tensor with ``n`` spatial axes: ``axis`` sliced to ``[start:stop]``, the others
    full (or ``[1:-1]`` when ``inner``)."""
    idx = [slice(None), slice(None)] + [slice(1, -1) if inner else slice(None)] * n
    idx[2 + axis] = slice(start, stop)
    return tuple(idx)


def forward_differences(u: torch.Tensor) -> list[torch.Tensor]:
    """``u[x + e_i] - u[x]`` for each spatial axis i (each one shorter along its axis)."""
    n = u.ndim - 2
    return [u[_index(n, a, 1, None)] - u[_index(n, a, None, -1)] for a in range(n)]


def _forward_stencils(n: int) -> Terms:
    """Diffusion, forward scheme: ``sum_i mean((u[x + e_i] - u[x])^2)``."""
    return [(1.0, [(_index(n, a, 1, None), 1.0), (_index(n, a, None, -1), -1.0)]) for a in range(n)]


def _central_stencils(n: int) -> Terms:
    """Diffusion, central scheme: ``sum_i mean(((u[x + e_i] - u[x - e_i]) / 2)^2)`` on the interior."""
    return [
        (1.0, [(_index(n, a, 2, None, True), 0.5), (_index(n, a, None, -2, True), -0.5)]) for a in range(n)
    ]


def _bending_stencils(n: int) -> Terms:
    """Bending: ``mean(sum_i (d_ii u)^2 + 2 sum_{i<j} (d_ij u)^2)`` on the interior, compact second differences
    (``d_ij`` from the four diagonal neighbours, divided by 4)."""
    terms: list = []
    for i in range(n):
        p, c, m = (_index(n, i, a, b, True) for a, b in ((2, None), (1, -1), (None, -2)))
        terms.append((1.0, [(p, 1.0), (c, -2.0), (m, 1.0)]))
        for j in range(i + 1, n):

            def at(si: slice, sj: slice) -> tuple[slice, ...]:
                idx = [slice(None), slice(None)] + [slice(1, -1)] * n
                idx[2 + i], idx[2 + j] = si, sj
                return tuple(idx)

            hi, lo = slice(2, None), slice(None, -2)
            mixed = [(at(hi, hi), 0.25), (at(hi, lo), -0.25), (at(lo, hi), -0.25), (at(lo, lo), 0.25)]
            terms.append((2.0, mixed))
    return terms


class DisplacementPenalty(nn.Module):
    """Base class: validates ``u`` and calls ``_penalty(u)``."""

    min_size = 2

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        check_field(u, "u", self.min_size)
        return self._penalty(u)

    def _penalty(self, u):  # pragma: no cover - abstract
        raise NotImplementedError


class DiffusionRegularizer(DisplacementPenalty):
    """Membrane energy ``sum_i mean((d_i u)^2)``; scheme ``"forward"`` or ``"central"`` (= MONAI)."""

    def __init__(self, scheme: str = "forward"):
        super().__init__()
        if scheme not in ("forward", "central"):
            raise ValueError(f"scheme must be 'forward' or 'central', got {scheme!r}")
        self.scheme = scheme
        self.min_size = 3 if scheme == "central" else 2

    def _penalty(self, u):
        n = u.ndim - 2
        return stencil_energy(u, _central_stencils(n) if self.scheme == "central" else _forward_stencils(n))


class TotalVariationRegularizer(DisplacementPenalty):
    """Anisotropic total variation ``sum_i mean(|u[x + e_i] - u[x]|)``."""

    def _penalty(self, u):
        return sum(d.abs().mean() for d in forward_differences(u))


class BendingEnergyRegularizer(DisplacementPenalty):
    """Thin-plate bending energy with compact second differences (same as MONAI, normalize=False)."""

    min_size = 3

    def _penalty(self, u):
        return stencil_energy(u, _bending_stencils(u.ndim - 2))


class FoldingPenalty(DisplacementPenalty):
    """``mean(relu(-det J_phi))``: zero unless the transform folds (det J <= 0)."""

    def _penalty(self, u):
        return torch.relu(-jacobian_determinant(u)).mean()


class NoRegularizer(DisplacementPenalty):
    """Zero penalty (keeps the autograd graph connected)."""

    min_size = 1

    def _penalty(self, u):
        return u.sum() * 0.0


def inverse_consistency_residual(u_fwd: torch.Tensor, u_bwd: torch.Tensor) -> torch.Tensor:
    """Displacement of ``phi_bwd o phi_fwd`` ``(B, ndim, *S)`` in voxels; zero when ``u_bwd`` inverts ``u_fwd``."""
    check_field(u_fwd, "u_fwd")
    check_field(u_bwd, "u_bwd")
    if u_fwd.shape[1:] != u_bwd.shape[1:] or u_bwd.shape[0] not in (1, u_fwd.shape[0]):
        raise ValueError(f"u_fwd {tuple(u_fwd.shape)} and u_bwd {tuple(u_bwd.shape)} must share shape")
    if u_bwd.shape[0] != u_fwd.shape[0]:
        u_bwd = u_bwd.expand_as(u_fwd)
    return compose(u_bwd, u_fwd)


def inverse_consistency(u_fwd: torch.Tensor, u_bwd: torch.Tensor) -> torch.Tensor:
    """Mean squared length (voxels^2) of :func:`inverse_consistency_residual`; scalar, differentiable."""
    return (inverse_consistency_residual(u_fwd, u_bwd) ** 2).sum(1).mean()
