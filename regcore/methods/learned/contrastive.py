"""The contrastive objective of CoMIR (Pielawski et al., NeurIPS 2020) on ALIGNED image pairs.

:func:`info_nce` scores ``N`` corresponding points of two representations ``(N, C)``; :func:`sample_points`
draws those points from dense representations ``(B, C, *S)``; :func:`shifted_crops` cuts the two modalities at
independent offsets so corresponding pixels sit at different places in their crops (the encoders cannot match
them by their distance to the border). Used by :class:`regcore.methods.learned.comir.CoMIR`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Symmetric InfoNCE of ``N`` corresponding points ``a``, ``b`` ``(N, C)`` (row i of a matches row i of b).

    Critic ``h(a_i, b_j) = -mean_c (a_i - b_j)^2 / temperature``; the loss is the mean of the cross-entropies
    of matching a->b and b->a. It is >= 0, about ``log N`` for unrelated representations, and tends to 0 when
    corresponding points coincide and different points lie far apart.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be (N, C) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    logits = -d.clamp_min(0) / (a.shape[1] * temperature)
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def sample_points(
    rep_f: torch.Tensor,
    rep_m: torch.Tensor,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    n: int,
    foreground_fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C)`` representations at ``n`` pixel positions drawn from all pixels of the batch (same positions in
    both; ``fixed``/``moving`` ``(B, 1, *S)`` choose the foreground), without replacement."""
    c = rep_f.shape[1]
    flat_f = rep_f.movedim(1, -1).reshape(-1, c)
    flat_m = rep_m.movedim(1, -1).reshape(-1, c)
    fg = (torch.maximum(fixed, moving) > 0.05).reshape(-1).float()
    w = (1 - foreground_fraction) / fg.numel() + foreground_fraction * fg / fg.sum().clamp_min(1)
    idx = torch.multinomial(w.cpu(), min(n, fg.numel()), replacement=False, generator=generator).to(
        rep_f.device
    )
    return flat_f[idx], flat_m[idx]


def cut(x: torch.Tensor, window: tuple[slice, ...]) -> torch.Tensor:
    """``x[:, :, *window]``: the spatial window of a ``(B, C, *S)`` tensor."""
    return x[(slice(None), slice(None), *window)]


def shifted_crops(
    fixed: torch.Tensor, moving: torch.Tensor, max_shift: int, divisor: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[slice, ...]], list[tuple[slice, ...]]]:
    """Crops of ALIGNED images ``(B, 1, *T)`` at independent random offsets (each axis shorter by ``2 m``,
    ``m = max_shift``, kept under a quarter of the size so the crops overlap, rounded so sizes stay multiples of
    ``divisor``), plus per item the windows of the two crops
    that show the same pixels: ``fixed_crop[b][f_win[b]]`` corresponds voxel by voxel to ``moving_crop[b][m_win[b]]``."""
    shape = fixed.shape[2:]
    m = [min(max_shift, (s - 1) // 4, (s - divisor) // 2) for s in shape]  # 2 m < crop: the crops overlap
    m = [(2 * k // divisor) * divisor // 2 for k in m]  # 2 m is a multiple of the divisor
    size = [s - 2 * k for s, k in zip(shape, m)]
    fs, ms, f_win, m_win = [], [], [], []
    for b in range(fixed.shape[0]):
        of = [int(torch.randint(0, 2 * k + 1, (1,), generator=generator)) for k in m]
        om = [int(torch.randint(0, 2 * k + 1, (1,), generator=generator)) for k in m]
        fs.append(cut(fixed[b : b + 1], tuple(slice(o, o + n) for o, n in zip(of, size))))
        ms.append(cut(moving[b : b + 1], tuple(slice(o, o + n) for o, n in zip(om, size))))
        lo = [max(a, c) for a, c in zip(of, om)]  # the overlap, in the uncropped grid
        hi = [min(a, c) + n for a, c, n in zip(of, om, size)]
        f_win.append(tuple(slice(lo_ - a, h - a) for lo_, h, a in zip(lo, hi, of)))
        m_win.append(tuple(slice(lo_ - c, h - c) for lo_, h, c in zip(lo, hi, om)))
    return torch.cat(fs), torch.cat(ms), f_win, m_win
