"""Calibration where the truth is known: does the predicted uncertainty grow where the error grows?

Inside a foreground mask, compare the per-voxel predicted standard deviation ``sqrt(variance)`` (mm)
with the actual end-point error ``|u - u_true|`` (mm): Spearman's rank correlation
(:func:`scipy.stats.spearmanr`) and a reliability table (predicted-std deciles -> mean actual error).
A well-ranked estimate has a positive correlation and a rising reliability curve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ReliabilityBin:
    """One predicted-std bin: its range, mean predicted std, mean actual error (mm) and voxel count."""

    std_low_mm: float
    std_high_mm: float
    mean_std_mm: float
    mean_error_mm: float
    voxels: int


@dataclass(frozen=True)
class Calibration:
    """Predicted std vs actual error inside the mask.

    Attributes:
        spearman: Spearman rank correlation (NaN when either map is constant).
        p_value: its two-sided p-value.
        voxels: voxels in the mask.
        mean_error_mm, mean_std_mm: means over the mask.
        bins: reliability bins (predicted-std quantiles, low to high).
    """

    spearman: float
    p_value: float
    voxels: int
    mean_error_mm: float
    mean_std_mm: float
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=float)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def calibrate(std_mm, error_mm, mask=None, *, bins: int = 10) -> Calibration:
    """Spearman correlation and reliability bins of predicted ``std_mm`` vs actual ``error_mm`` (same shape
    ``(*S)``, mm) over the voxels where ``mask`` is true (all voxels when None)."""
    from scipy.stats import spearmanr

    std, err = _as_numpy(std_mm, "std_mm"), _as_numpy(error_mm, "error_mm")
    if std.shape != err.shape:
        raise ValueError(f"std_mm shape {std.shape} != error_mm shape {err.shape}")
    m = np.ones(std.shape, bool) if mask is None else _as_numpy(mask, "mask").astype(bool)
    if m.shape != std.shape:
        raise ValueError(f"mask shape {m.shape} != std_mm shape {std.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    s, e = std[m], err[m]
    if s.size < 3:
        raise ValueError(f"the mask holds {s.size} voxels; calibration needs at least 3")
    if np.ptp(s) == 0 or np.ptp(e) == 0:
        rho, p = float("nan"), float("nan")
    else:
        res = spearmanr(s, e)
        rho, p = float(res.statistic), float(res.pvalue)
    edges = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, max(len(edges) - 2, 0))
    table = []
    for b in range(max(len(edges) - 1, 1)):
        sel = which == b
        if sel.any():
            hi = edges[b + 1] if b + 1 < len(edges) else edges[b]
            table.append(
                ReliabilityBin(
                    float(edges[b]), float(hi), float(s[sel].mean()), float(e[sel].mean()), int(sel.sum())
                )
            )
    return Calibration(rho, p, int(s.size), float(e.mean()), float(s.mean()), tuple(table))


def foreground_mask(fixed: torch.Tensor, fixed_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``(*S)`` foreground of a fixed image ``(1, *S)``: its labelled voxels when a label map
    ``(1, *S)`` is given, else intensities above 10 % of the image's 1-99 % percentile range."""
    if fixed_labels is not None:
        if tuple(fixed_labels.shape) != tuple(fixed.shape):
            raise ValueError(
                f"fixed_labels shape {tuple(fixed_labels.shape)} != fixed shape {tuple(fixed.shape)}"
            )
        return fixed_labels[0] > 0
    x = fixed[0].float()
    lo, hi = torch.quantile(x.flatten(), torch.tensor([0.01, 0.99], dtype=x.dtype)).tolist()
    return x > lo + 0.1 * (hi - lo)
