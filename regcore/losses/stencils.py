"""Sums of squared finite-difference stencils of a field, with a hand-written adjoint as their gradient.

``stencil_energy(u, terms)`` is ``sum_k w_k * mean(r_k ** 2)`` with ``r_k = sum_t c_t * u[slab_t]``: each term is a
weight and a stencil, a few (index, coefficient) pairs whose slabs of ``u`` share one shape. The diffusion and
bending penalties (:mod:`regcore.losses.regularizers`) are such sums.

Why not plain autograd: the backward of every slice ``u[slab]`` allocates a zero tensor the size of ``u`` and copies
the slab's gradient into it, and autograd then adds those full-size tensors up. The 3D bending energy takes 21 slabs,
so each step of ``bspline`` zero-filled and summed 21 field-sized tensors: 26 % of its CPU time on the 1 mm brain
was ``fill_`` alone. The adjoint here zero-fills one gradient and adds each slab's share into it in place. The
stencils are recomputed in the backward rather than saved (memory stays at one field). Values and gradients equal
plain autograd's to rounding (``tests/test_losses_regularizers.py``, with ``gradcheck``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Stencil = Sequence[tuple[tuple[slice, ...], float]]
"""(index into ``u``, coefficient) pairs; every index selects a slab of the same shape."""
Terms = Sequence[tuple[float, Stencil]]
"""(weight, stencil) pairs."""


def _apply(u: torch.Tensor, stencil: Stencil) -> torch.Tensor:
    """``sum_t c_t * u[index_t]`` (a new tensor)."""
    (first, c0), *rest = stencil
    out = u[first] * c0
    for index, c in rest:
        out.add_(u[index], alpha=c)
    return out


class _StencilEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, terms: Terms) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.terms = terms
        energy = u.new_zeros(())
        for weight, stencil in terms:
            r = _apply(u, stencil)
            energy = energy + weight * r.square().mean()
        return energy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_energy: torch.Tensor):
        (u,) = ctx.saved_tensors
        grad = torch.zeros_like(u)
        for weight, stencil in ctx.terms:
            r = _apply(u, stencil)
            r.mul_(grad_energy * (2.0 * weight / r.numel()))  # d/dr of weight * mean(r^2)
            for index, c in stencil:
                grad[index].add_(r, alpha=c)
        return grad, None


def stencil_energy(u: torch.Tensor, terms: Terms) -> torch.Tensor:
    """``sum_k w_k * mean((sum_t c_t * u[index_t]) ** 2)`` for ``terms = [(w_k, [(index_t, c_t), ...]), ...]``: a
    0-dim tensor, differentiable in ``u`` (first order)."""
    return _StencilEnergy.apply(u, tuple((float(w), tuple(s)) for w, s in terms))
