"""Box-window local squared NCC with its exact analytic gradient: the hot loop of ``fireants``
(torch version; :mod:`greedy_kernels` fuses the same computation on CPU)."""

from __future__ import annotations

import torch

from regcore.methods.classical.filters import box_filter


def lncc_and_gradient(
    fixed: torch.Tensor, warped: torch.Tensor, window: int, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-window local squared NCC and its exact gradient with respect to ``warped``.

    Loss ``L = -mean_x cc(x)``, ``cc = A^2 / (B C)`` with the window sums ``A = cov(I, J)``,
    ``B = var(I)``, ``C = var(J)`` (I = fixed, J = warped; both ``(1, 1, *S)``; ``window`` odd, voxels).
    Returns ``(L as float tensor, dL/dJ (1, 1, *S))``. The gradient sums the contributions of every
    window a voxel belongs to (a second pass of box filters), so it matches autograd of
    ``regcore.losses.make_similarity("lncc", ndim, window=window)`` (tested).
    """
    n_vox = float(fixed.numel())
    stats = box_filter(torch.cat([fixed, warped, fixed * fixed, warped * warped, fixed * warped], 1), window)
    mi, mj, mii, mjj, mij = stats.unbind(1)
    a = mij - mi * mj
    b = (mii - mi * mi).clamp_min(eps)
    c = (mjj - mj * mj).clamp_min(eps)
    cc = a * a / (b * c)
    loss = -cc.mean()
    # d cc(x) / d J(y) = alpha(x) [ (I(y) - mi(x)) - beta(x) (J(y) - mj(x)) ] * (window mean weight)
    alpha = 2.0 * a / (b * c)
    beta = a / c
    terms = box_filter(torch.stack([alpha, alpha * mi, alpha * beta, alpha * beta * mj], 1), window)
    t0, t1, t2, t3 = terms.unbind(1)
    i, j = fixed[:, 0], warped[:, 0]
    grad = -(i * t0 - t1 - j * t2 + t3) / n_vox
    return loss, grad.unsqueeze(1)
