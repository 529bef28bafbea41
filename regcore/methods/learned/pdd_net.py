"""PDD-Net (Heinrich, MICCAI 2019; the correlation core of VoxelMorph++, Heinrich & Hansen, WBIR 2022):
a probabilistic dense displacement network with very few weights.

1. A small convolutional feature extractor (shared by both images, a few thousand weights) gives
   unit-length feature vectors on a grid ``stride = 2^levels`` times coarser than the model grid.
2. A discrete displacement cost volume: for every coarse voxel ``x`` and every label ``d`` of a regular
   grid of displacements (``(2 radius + 1)^n`` labels, ``label_step`` coarse voxels apart),
   ``D(x, d) = 1 - <f_fixed(x), f_moving(x + d)>`` (a correlation layer).
3. Regularisation of the cost by ``iterations`` mean-field-like steps: a min-convolution over the
   displacement labels (min-pooling, then averaging: a cheap stand-in for the quadratic distance
   transform) followed by spatial averaging over neighbouring voxels, added to the scaled data cost
   with a learned weight.
4. Soft-argmin: ``u(x) = sum_d softmax(-C(x, .))_d d``, smoothed and up-sampled to the model grid.

Output: displacement ``(B, n, *S)`` in model-grid voxels, fixed -> moving (``warped = moving o (id + u)``).
``extras``: ``maps`` (``cost_min``: the regularised cost's minimum per voxel, ``confidence``: the largest
label probability, both ``(1, 1, *S)``), ``cost_volume_centre`` (``(k, k)`` data cost over the labels
at the centre voxel, ``k = 2 radius + 1``; rows = axis 0 displacement, columns = axis 1, in 3D the plane
of zero axis-0 displacement) and ``label_spacing_vox`` (model voxels between neighbouring labels).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, Prediction, register_family
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import Block
from regcore.nets.spatial_ops import resize_field, resize_image


@dataclass(frozen=True)
class PDDNetConfig:
    widths: tuple[int, ...] = param(
        (8, 16, 16, 16),
        "Feature extractor widths (first at full resolution, then one 2x down-sampling per "
        "'levels', then the rest).",
        range=(1, 128),
    )
    features: int = param(16, "Feature channels compared by the correlation layer.", range=(2, 128))
    levels: int = param(1, "2x down-samplings before the cost volume (stride 2^levels).", range=(0, 3))
    radius: int = param(
        3, "Displacement labels per axis: 2 radius + 1 (2D: 49 labels at radius 3).", range=(1, 8)
    )
    label_step: int = param(1, "Coarse voxels between neighbouring displacement labels.", range=(1, 4))
    iterations: int = param(2, "Mean-field regularisation steps on the cost volume.", range=(0, 8))


DATA_SCALE = 10.0  # initial sharpness of softmax(-cost): a cost gap of 0.1 = a factor e


def _pool(dims: int, kind: str):
    return getattr(F, f"{kind}_pool{dims}d")


def displacement_labels(dims: int, radius: int, step: float = 1.0, device=None) -> torch.Tensor:
    """``(L, n)`` label displacements, ``L = (2 radius + 1)^n``, in C order over the label grid (axis 0 slowest)."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device) * step
    return torch.tensor(list(itertools.product(r.tolist(), repeat=dims)), dtype=torch.float32, device=device)


def soft_argmin(cost: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Expected displacement under ``softmax(-cost)`` over the labels.

    Args:
        cost: ``(B, L, *S)`` cost per label (lower = better).
        labels: ``(L, n)`` displacement of each label.
    Returns:
        ``(B, n, *S)`` displacement in the units of ``labels``.
    """
    if cost.shape[1] != labels.shape[0]:
        raise ValueError(f"cost has {cost.shape[1]} labels on axis 1, labels has {labels.shape[0]}")
    prob = torch.softmax(-cost, dim=1)
    return torch.einsum("bl...,ln->bn...", prob, labels.to(cost))


def correlation_cost(
    fixed_feat: torch.Tensor, moving_feat: torch.Tensor, radius: int, step: int
) -> torch.Tensor:
    """``D(x, d) = 1 - <f(x), m(x + d)>`` for unit feature vectors ``(B, C, *s)`` -> ``(B, L, *s)``.

    Labels ``d`` in :func:`displacement_labels` order (coarse voxels); outside the grid the moving features
    are replicated from the border."""
    dims = fixed_feat.ndim - 2
    p = radius * step
    size = fixed_feat.shape[2:]
    windows = F.pad(moving_feat, [p] * (2 * dims), mode="replicate")
    for axis, n in enumerate(size):  # a view (B, C, k, .., k, *s): window j starts at j * step
        windows = windows.unfold(2 + axis, n, step)
    fixed = fixed_feat.reshape(*fixed_feat.shape[:2], *(1,) * dims, *size)
    cost = 1.0 - (windows * fixed).sum(1)
    return cost.reshape(fixed_feat.shape[0], -1, *size)


def _neighbours(c: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``c`` shifted by -1 and +1 along ``axis``, the border value repeated."""
    n = c.shape[axis]
    lo = torch.cat([c.narrow(axis, 0, 1), c.narrow(axis, 0, n - 1)], axis)
    hi = torch.cat([c.narrow(axis, 1, n - 1), c.narrow(axis, n - 1, 1)], axis)
    return lo, hi


def regularise_cost(data: torch.Tensor, weights: torch.Tensor, dims: int, k: int) -> torch.Tensor:
    """Mean-field-like smoothing of a cost volume ``(B, L, *s)`` (``L = k^n``), one step per weight:
    ``C <- data + w * avg_space(avg_labels(min_labels(C)))``; the label-space min and mean run over the
    3^n neighbouring labels (separably, the border label repeated), the spatial mean over 3^n voxels."""
    b, length, *s = data.shape
    cost = data
    for w in weights:
        c = cost.reshape(b, *(k,) * dims, *s)
        for axis in range(1, dims + 1):  # min-convolution over neighbouring labels
            lo, hi = _neighbours(c, axis)
            c = torch.minimum(c, torch.minimum(lo, hi))
        for axis in range(1, dims + 1):
            lo, hi = _neighbours(c, axis)
            c = (lo + c + hi) / 3.0
        c = _pool(dims, "avg")(c.reshape(b, length, *s), 3, 1, 1, count_include_pad=False)
        cost = data + w * c
    return cost


class FeatureNet(nn.Module):
    """Few-weight shared feature extractor: ``(B, 1, *S)`` -> unit vectors ``(B, features, *S / 2^levels)``."""

    def __init__(self, dims: int, widths: tuple[int, ...], features: int, levels: int):
        super().__init__()
        if len(widths) < levels + 1:
            raise ValueError(f"widths needs at least levels + 1 = {levels + 1} entries, got {widths!r}")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        blocks, cin = [], 1
        for i, w in enumerate(widths):
            blocks.append(Block(dims, cin, w, stride=2 if 1 <= i <= levels else 1))
            cin = w
        self.body = nn.Sequential(*blocks)
        self.out = conv(cin, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.out(self.body(x))
        f = f - f.mean(dim=tuple(range(2, f.ndim)), keepdim=True)  # per image: what varies in space
        return F.normalize(f, dim=1)


@register_family
class PDDNet(LearnedFamily):
    name = "pdd_net"
    title = "PDD-Net (discrete displacement cost volume)"
    summary = (
        "A tiny network turns each image into feature vectors on a coarse grid. For every coarse voxel "
        "it then tries a whole grid of candidate displacements and scores each one by how well the "
        "features match (a cost volume, as in classical discrete registration). A few smoothing steps "
        "make neighbouring voxels agree, and the expected displacement under the resulting "
        "probabilities gives a smooth field. With so few weights it learns from little data."
    )
    paper = (
        "Heinrich, Closing the Gap between Deep and Conventional Image Registration using Probabilistic "
        "Dense Displacement Networks, MICCAI 2019; Heinrich & Hansen, VoxelMorph++, WBIR 2022"
    )
    supervision = Supervision.WEAK
    Config = PDDNetConfig

    def build(self, dims: int, config: PDDNetConfig) -> nn.ModuleDict:
        nets = nn.ModuleDict(
            {"features": FeatureNet(dims, tuple(config.widths), config.features, config.levels)}
        )
        # positive scalars through softplus: data-cost scale (sharpness) and one weight per step
        nets["scales"] = nn.ParameterDict(
            {
                "data": nn.Parameter(torch.tensor(DATA_SCALE)),
                "smooth": nn.Parameter(torch.zeros(max(config.iterations, 1))),
            }
        )
        return nets

    def divisor(self, dims: int, config: PDDNetConfig) -> int:
        return 2**config.levels

    def cost_volume(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: PDDNetConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(data cost, regularised cost)``, each ``(B, L, *S / 2^levels)`` (scaled, lower = better)."""
        dims = fixed.ndim - 2
        for name, x in (("moving", moving), ("fixed", fixed)):
            if x.ndim not in (4, 5) or x.shape[1] != 1:
                raise ValueError(f"{name} must be (B, 1, *S) with 2 or 3 spatial axes, got {tuple(x.shape)}")
        if moving.shape != fixed.shape:
            raise ValueError(f"moving shape {tuple(moving.shape)} != fixed shape {tuple(fixed.shape)}")
        div = self.divisor(dims, config)
        if any(s % div for s in fixed.shape[2:]):
            raise ValueError(f"spatial shape {tuple(fixed.shape[2:])} must be divisible by {div}")
        feats = nets["features"](torch.cat([fixed, moving], 0))
        ff, fm = feats[: fixed.shape[0]], feats[fixed.shape[0] :]
        data = F.softplus(nets["scales"]["data"]) * correlation_cost(ff, fm, config.radius, config.label_step)
        weights = F.softplus(nets["scales"]["smooth"])[: config.iterations]
        return data, regularise_cost(data, weights, dims, 2 * config.radius + 1)

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: PDDNetConfig, settings=None
    ) -> Prediction:
        dims = fixed.ndim - 2
        data, cost = self.cost_volume(nets, moving, fixed, config)
        labels = displacement_labels(dims, config.radius, float(config.label_step), cost.device)
        u = soft_argmin(cost, labels)  # coarse voxels
        for _ in range(2):  # light smoothing of the coarse field (no weights)
            u = _pool(dims, "avg")(F.pad(u, [1] * (2 * dims), mode="replicate"), 3, 1)
        shape = tuple(fixed.shape[2:])
        u = resize_field(u, shape) if tuple(u.shape[2:]) != shape else u
        with torch.no_grad():
            k = 2 * config.radius + 1
            centre = data[0, :, *(n // 2 for n in data.shape[2:])].float().reshape((k,) * dims)
            if dims == 3:
                centre = centre[config.radius]
            maps = {
                "cost_min": cost[:1].min(1, keepdim=True).values,
                "confidence": torch.softmax(-cost[:1], 1).max(1, keepdim=True).values,
            }
            maps = {n: resize_image(m.float(), shape) for n, m in maps.items()}
        extras = {
            "maps": maps,
            "cost_volume_centre": centre.cpu(),
            "label_spacing_vox": float(config.label_step * 2**config.levels),
        }
        return Prediction(displacement=u, extras=extras)
