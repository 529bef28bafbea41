"""Implicit neural representation of the deformation (IDIR; Wolterink et al., MIDL 2022).

No training set and no checkpoint: for each pair a small coordinate network (a SIREN, an MLP with
sine activations) is fitted from scratch so that ``u = MLP(x)`` maps fixed-image coordinates to a
displacement. Each Adam step draws random points of the fixed image, compares the fixed intensity
at ``x`` with the moving intensity at ``x + u(x)`` (normalised cross-correlation over the points)
and penalises ``|1 - det(I + du/dx)|`` and det J below a margin. det J comes from central differences of
one voxel of the network (default: the stencil the evaluation uses on the grid, so a fold between grid
points that the exact derivative misses is still seen) or from the exact derivative by automatic
differentiation (the paper's choice). The field is continuous: after fitting it is evaluated on the
whole fixed grid.

Coordinates: network input and output are in normalised units (each axis of the fixed grid mapped to
[-1, 1], tensor-axis order); the returned displacement is ``(1, n, *S)`` voxels, fixed -> moving.
det J is the same in normalised and voxel units (a per-axis scaling cancels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import LearnedFamily, LearnedSettings, Prediction, register_family
from regcore.methods.learned.pointwise import (
    grid_points,
    jacobian_determinant_at,
    normalised_to_voxels,
    point_ncc_loss,
    sample_at,
    stencil_determinant_at,
)
from regcore.methods.registry import Supervision


class SineLayer(nn.Module):
    """``sin(omega * (W x + b))`` with SIREN's initialisation (Sitzmann et al., NeurIPS 2020)."""

    def __init__(self, n_in: int, n_out: int, omega: float, first: bool) -> None:
        super().__init__()
        self.omega = float(omega)
        self.linear = nn.Linear(n_in, n_out)
        bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / self.omega
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega * self.linear(x))


class Siren(nn.Module):
    """Coordinate MLP ``(N, n) -> (N, n)``: sine layers, then a linear head started near zero (identity map)."""

    def __init__(self, dims: int, hidden: int, layers: int, omega: float) -> None:
        super().__init__()
        blocks = [SineLayer(dims, hidden, omega, first=True)]
        blocks += [SineLayer(hidden, hidden, omega, first=False) for _ in range(layers - 1)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, dims)
        nn.init.uniform_(self.head.weight, -1e-4, 1e-4)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


FOLD_MARGIN = 0.2  # det J below this is pushed up by the fold barrier


@dataclass(frozen=True)
class INRConfig:
    hidden: int = param(64, "Neurons per hidden layer of the coordinate network.", range=(16, 512))
    layers: int = param(3, "Sine layers.", range=(1, 8))
    omega: float = param(
        8.0, "Frequency of the first sine layer: higher = finer, less smooth fields.", range=(1.0, 60.0)
    )


@dataclass(frozen=True)
class INRSettings(LearnedSettings):
    iterations: int = param(450, "Adam steps fitted on this pair.", range=(1, 20000))
    points: int = param(4096, "Random fixed-image points per step.", range=(256, 200000))
    learning_rate: float = param(1e-3, "Adam learning rate.", range=(1e-6, 1e-1), step=1e-4)
    jacobian_weight: float = param(
        0.15, "Weight of |1 - det J| (smoothness: volume kept).", range=(0.0, 10.0), step=0.01
    )
    fold_weight: float = param(
        10.0,
        "Weight of the barrier against det J below 0.2 (folding). 10 gave no folding on the 24 tune slice pairs "
        "of benchmarks/dev_benchmark.py (1: up to 0.35 %) at 0.006 lower Dice.",
        range=(0.0, 100.0),
        step=0.1,
    )
    final_lr_fraction: float = param(
        0.1,
        "The learning rate falls along a cosine from learning_rate to this fraction of it at the last step, so the "
        "fit settles instead of jittering (with a constant rate Dice moves by about 0.01 from one step to the next). "
        "On 8 of the 24 tune slice pairs, with 450 steps: Dice 0.623 against 0.607 for 300 steps at a constant rate.",
        range=(0.0, 1.0),
        step=0.05,
    )
    jacobian: str = param(
        "stencil",
        "How det J is taken at the random points. 'stencil': central differences of one voxel, the same as the "
        "evaluation's folding count on the grid. 'exact': automatic differentiation, as in the paper. On 8 of "
        "the 24 tune slice pairs the two gave the same mean Dice (0.607 vs 0.608); 'exact' folded 2 of the 24 "
        "held-out pairs of benchmarks/zoo.py.",
        choices=("stencil", "exact"),
    )
    seed: int = param(0, "Random seed (initial weights and point draws).", range=(0, 2**31 - 1))


@register_family
class IDIR(LearnedFamily):
    name = "inr"
    title = "INR / IDIR (implicit neural representation)"
    paper = "Wolterink, Zwienenberg & Brune, Implicit neural representations for deformable image registration, MIDL 2022"
    summary = (
        "Instead of a grid of arrows, the deformation is a small neural network that takes a "
        "position and returns where it moves. The network is fitted to this one pair only (no "
        "training set): at random points the fixed and moved intensities are made to agree, while "
        "a penalty keeps the local volume change close to 1 so the map stays smooth and does not "
        "fold. Because the network is a continuous function, the field exists between voxels too."
    )
    supervision = Supervision.UNSUPERVISED
    Config = INRConfig
    Settings = INRSettings
    needs_training = False
    predict_needs_grad = True

    def build(self, dims: int, config: INRConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"field": Siren(dims, config.hidden, config.layers, config.omega)})

    def predict(self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: INRConfig, settings=None):
        settings = settings or INRSettings()
        shape = tuple(fixed.shape[2:])
        n = len(shape)
        device = fixed.device
        generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))
        torch.manual_seed(int(settings.seed))
        nets = self.build(n, config).to(device)  # a fresh network per pair
        mlp = nets["field"]
        opt = torch.optim.Adam(mlp.parameters(), lr=float(settings.learning_rate))
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt,
            max(int(settings.iterations), 1),
            eta_min=float(settings.learning_rate) * settings.final_lr_fraction,
        )
        history = []
        with torch.enable_grad():
            for _ in range(int(settings.iterations)):
                x = (torch.rand(int(settings.points), n, generator=generator) * 2 - 1).to(device)
                ncc = point_ncc_loss(sample_at(fixed, x), sample_at(moving, x + mlp(x)))
                loss = ncc
                if settings.jacobian_weight > 0 or settings.fold_weight > 0:
                    xj = x[: max(len(x) // 4, 64)]  # a quarter: the costly part
                    if settings.jacobian == "stencil":
                        det = stencil_determinant_at(mlp, xj, shape)
                    else:
                        xj = xj.clone().requires_grad_(True)
                        det = jacobian_determinant_at(mlp(xj), xj)
                    loss = loss + settings.jacobian_weight * (1 - det).abs().mean()
                    loss = loss + settings.fold_weight * torch.relu(FOLD_MARGIN - det).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                decay.step()
                history.append(float(ncc.detach()))
        with torch.no_grad():
            points = grid_points(shape, device)
            u = torch.cat([mlp(chunk) for chunk in points.split(65536)])
        displacement = normalised_to_voxels(u, shape)
        return Prediction(
            displacement=displacement.detach(),
            extras={"loss_history": history, "iterations": len(history)},
        )
