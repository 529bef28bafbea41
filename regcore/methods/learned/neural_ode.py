"""Neural ODE registration (NODEO; Wu et al., CVPR 2022).

Every voxel is a particle that flows along a velocity field for one unit of time:
``d phi / dt = v_theta(phi(t), t)``, ``phi(0) = id``. The velocity is a neural network (a learnable
latent grid at a quarter of the resolution, a small convolutional decoder that also reads the time
``t``, then Gaussian smoothing) fitted to this one pair; no training set and no checkpoint. The flow
is integrated with a fixed-step ODE solver (Euler or classical Runge-Kutta) through the warp
operator: ``u_{k+1} = u_k + h * v(x + u_k(x), t_k)``. Loss: LNCC(fixed, moving o phi(1)) + a penalty on
negative Jacobian determinants + a diffusion penalty on the velocity.

Fields are ``(1, n, *S)`` voxels of the fixed grid, fixed -> moving; the prediction's
``trajectory`` holds ``u`` at every solver step (t = 0 .. 1) for the morphing view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regcore.config import param
from regcore.losses import make_regularizer, make_similarity
from regcore.methods.learned.family import LearnedFamily, LearnedSettings, Prediction, register_family
from regcore.methods.registry import Supervision
from regcore.spatial.jacobian import jacobian_determinant
from regcore.spatial.smooth import gaussian_smooth
from regcore.spatial.warp import warp

LATENT_FACTOR = 4  # the latent grid is this many times coarser than the image, per axis


class VelocityNet(nn.Module):
    """``v(t)`` ``(1, n, *S)`` voxels: latent grid + time channel -> 2 convolutions -> upsample -> smooth."""

    def __init__(self, dims: int, channels: int, smoothing_sigma: float) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims, self.channels, self.sigma = dims, channels, float(smoothing_sigma)
        self.latent: nn.Parameter | None = None
        self.hidden = conv(channels + 1, 2 * channels, 3, padding=1)
        self.out = conv(2 * channels, dims, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def reset(self, shape: tuple[int, ...], generator: torch.Generator, device) -> None:
        """A fresh latent grid for an image of ``shape`` (a new pair)."""
        coarse = [max(s // LATENT_FACTOR, 2) for s in shape]
        z = torch.randn(1, self.channels, *coarse, generator=generator) * 0.1
        self.latent = nn.Parameter(z.to(device))
        self.shape = tuple(shape)

    def forward(self, t: float) -> torch.Tensor:
        z = self.latent
        if z is None:
            raise RuntimeError("VelocityNet.reset(shape, ...) must be called before use")
        time_channel = torch.full_like(z[:, :1], float(t))
        h = F.leaky_relu(self.hidden(torch.cat([z, time_channel], 1)), 0.2)
        v = self.out(h) * LATENT_FACTOR  # voxels of the fine grid
        mode = "bilinear" if self.dims == 2 else "trilinear"
        v = F.interpolate(v, size=self.shape, mode=mode, align_corners=True)
        return gaussian_smooth(v, self.sigma) if self.sigma > 0 else v


def integrate_flow(velocity: VelocityNet, steps: int, solver: str) -> list[torch.Tensor]:
    """Displacements ``u(t_k)`` of the flow ``d phi/dt = v(phi, t)`` at ``t_k = k / steps``, k = 0..steps."""
    n = velocity.dims
    u = torch.zeros(1, n, *velocity.shape, device=velocity.out.weight.device)
    h = 1.0 / steps
    path = [u]

    def rate(t: float, disp: torch.Tensor) -> torch.Tensor:
        return warp(velocity(t), disp)  # v(x + u(x), t)

    for k in range(steps):
        t = k * h
        if solver == "euler":
            u = u + h * rate(t, u)
        else:  # classical 4th-order Runge-Kutta
            k1 = rate(t, u)
            k2 = rate(t + h / 2, u + h / 2 * k1)
            k3 = rate(t + h / 2, u + h / 2 * k2)
            k4 = rate(t + h, u + h * k3)
            u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        path.append(u)
    return path


@dataclass(frozen=True)
class NeuralODEConfig:
    channels: int = param(8, "Channels of the latent velocity grid.", range=(1, 64))
    smoothing_sigma: float = param(
        2.0, "Gaussian smoothing of the velocity (voxels): larger = smoother.", range=(0.0, 10.0)
    )


@dataclass(frozen=True)
class NeuralODESettings(LearnedSettings):
    iterations: int = param(150, "Adam steps fitted on this pair.", range=(1, 5000))
    steps: int = param(8, "ODE solver steps from t = 0 to 1.", range=(1, 64))
    solver: str = param("euler", "Fixed-step ODE solver.", choices=("euler", "rk4"))
    learning_rate: float = param(0.01, "Adam learning rate.", range=(1e-5, 1.0), step=1e-3)
    jacobian_weight: float = param(
        10.0, "Weight of the penalty on negative det J (folding).", range=(0.0, 1000.0), step=0.5
    )
    smoothness_weight: float = param(
        1.0, "Weight of the diffusion penalty on the velocity.", range=(0.0, 100.0), step=0.1
    )
    seed: int = param(0, "Random seed of the latent grid and the decoder.", range=(0, 2**31 - 1))


@register_family
class NODEO(LearnedFamily):
    name = "neural_ode"
    title = "Neural ODE (NODEO)"
    paper = "Wu, Jiahao, Wang, Yushkevich, Hsieh & Gee, NODEO: a neural ordinary differential equation based optimization framework for deformable image registration, CVPR 2022"
    summary = (
        "Each voxel is treated as a particle that drifts with a velocity field for one unit of time; "
        "where it ends up is where the moving image is sampled. The velocity comes from a small "
        "neural network fitted to this one pair, and an ODE solver follows the particles step by "
        "step, so the whole morph from the moving to the fixed image is available. Smooth velocity "
        "and a penalty on folding keep the map invertible."
    )
    supervision = Supervision.UNSUPERVISED
    Config = NeuralODEConfig
    Settings = NeuralODESettings
    needs_training = False
    predict_needs_grad = True

    def build(self, dims: int, config: NeuralODEConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"velocity": VelocityNet(dims, config.channels, config.smoothing_sigma)})

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: NeuralODEConfig, settings=None
    ):
        settings = settings or NeuralODESettings()
        n = fixed.ndim - 2
        generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))
        torch.manual_seed(int(settings.seed))
        velocity = self.build(n, config)["velocity"].to(fixed.device)  # a fresh network per pair
        velocity.reset(tuple(fixed.shape[2:]), generator, fixed.device)
        similarity = make_similarity("lncc", n)
        diffusion = make_regularizer("diffusion")
        opt = torch.optim.Adam(velocity.parameters(), lr=float(settings.learning_rate))
        history = []
        with torch.enable_grad():
            for _ in range(int(settings.iterations)):
                u = integrate_flow(velocity, int(settings.steps), settings.solver)[-1]
                sim = similarity(fixed, warp(moving, u))
                loss = sim + settings.jacobian_weight * torch.relu(-jacobian_determinant(u)).mean()
                loss = loss + settings.smoothness_weight * diffusion(velocity(0.5))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append(float(sim.detach()))
        with torch.no_grad():
            path = integrate_flow(velocity, int(settings.steps), settings.solver)
        return Prediction(
            displacement=path[-1].detach(),
            trajectory=[p.detach() for p in path],
            extras={"loss_history": history, "iterations": len(history)},
        )
