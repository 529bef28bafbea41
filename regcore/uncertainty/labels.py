"""Registration uncertainty propagated to segmentation: label-probability maps and label entropy.

Warp the moving label map with every member field (nearest neighbour, as a registration warps
labels), one-hot encode each warped map, average: ``P[l](x)`` = fraction of members that put label
``l`` at fixed voxel x. The entropy ``H(x) = -sum_l P[l] log2 P[l]`` (bits) is 0 where all members
agree and at most ``log2(L)``.
"""

from __future__ import annotations

import torch

from regcore.spatial.warp import warp_labels
from regcore.uncertainty.fields import check_stack


def label_probabilities(labels: torch.Tensor, samples: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """``(values, P)``: label values (0 first) and ``P (L, *S)``, the per-voxel frequency of each label over
    the members. ``labels``: the moving label map on the fixed grid, ``(*S)``, ``(1, *S)`` or ``(1, 1, *S)``;
    ``samples``: ``(K, 1, n, *S)`` voxel fields, fixed -> moving."""
    s = check_stack(samples)
    shape = tuple(s.shape[3:])
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if (
        labels.ndim < len(shape)
        or tuple(labels.shape[-len(shape) :]) != shape
        or labels.numel() != s[0, 0, 0].numel()
    ):
        raise ValueError(f"labels must lie on the fixed grid {shape}, got shape {tuple(labels.shape)}")
    lab = labels.reshape(1, 1, *shape).to(s.device)
    values = sorted({0, *(int(v) for v in torch.unique(lab).tolist())})
    index = {v: i for i, v in enumerate(values)}
    counts = torch.zeros((len(values), *shape), dtype=torch.float32, device=s.device)
    for u in s:
        warped = warp_labels(lab.float(), u).round().long()[0, 0]
        for v, i in index.items():
            counts[i] += warped == v
    return values, counts / s.shape[0]


def label_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-voxel entropy (bits) ``(*S)`` of label probabilities ``(L, *S)`` that sum to 1 over L."""
    p = probabilities.float()
    logp = torch.where(p > 0, torch.log2(p.clamp_min(1e-12)), torch.zeros_like(p))
    return -(p * logp).sum(dim=0)
