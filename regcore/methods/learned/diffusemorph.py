"""DiffuseMorph (Kim, Han & Ye, ECCV 2022): a denoising diffusion model's score features drive registration.

Two networks are trained together:

* the *diffusion network* ``G`` (a U-Net whose blocks are modulated by a sinusoidal embedding of the
  time step ``t``, :class:`~regcore.nets.conv_unet.ConvUNet` with FiLM) gets the moving image ``m`` and
  the noisy fixed image ``x_t = sqrt(abar_t) f + sqrt(1 - abar_t) eps`` (DDPM forward process,
  :func:`q_sample`) and predicts the noise ``eps`` (channel 0; the score is ``-eps / sqrt(1 - abar_t)``)
  plus ``feature_channels`` further feature maps;
* the *deformation network* ``R`` gets ``(m, f, G's output)`` and predicts a stationary velocity ``v``
  (voxels), integrated by scaling and squaring (:func:`regcore.spatial.svf.integrate_svf`).

Joint loss: ``diffusion_weight * |G(m, x_t, t) - eps|^2`` (:func:`diffusion_loss`) + the registration
terms of the recipe (similarity of ``f`` and ``m o phi`` + diffusion regulariser of ``v``, Dice when weak).

Inference: ``G`` sees the clean fixed image at ``t = 0``; the field is ``exp(gamma v)``. Continuous
deformation: scaling the velocity by ``s`` in [0, gamma] gives the intermediate maps ``exp(s v)``
(``Prediction.trajectory``: identity at s = 0, the final field at s = gamma; every one diffeomorphic).
With ``sampling_steps > 0`` a short deterministic reverse diffusion (DDIM, eta = 0) denoises the fixed
image noised to ``sampling_start``; a few of its steps are returned as ``extras["maps"]``. Trajectory and
maps are views (:meth:`DiffuseMorph.explain`), computed after the timed registration: the field never
depends on them.

Fields are ``(B, n, *S)`` voxels of the fixed grid, fixed -> moving (``warped = moving o (id + u)``).
Default weights: ``assets/models/diffusemorph2d.pt`` (OASIS training slices, see its model card).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import (
    LearnedFamily,
    LearnedSettings,
    Prediction,
    StepContext,
    register_family,
)
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet
from regcore.spatial.svf import integrate_svf

TIME_DIM = 32  # size of the sinusoidal time embedding fed to the FiLM of the diffusion U-Net
BETA_START, BETA_END = 1e-4, 0.02  # linear DDPM schedule (Ho et al. 2020), scaled to 1000 steps


def noise_schedule(timesteps: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(betas, alpha_bars)`` ``(T,)`` float32 of the linear DDPM schedule; ``alpha_bars[t] = prod_{s<=t}(1 - beta_s)``.

    The betas run linearly from ``1e-4 * 1000 / T`` to ``0.02 * 1000 / T`` (the 1000-step schedule stretched to
    ``T`` steps, so the last ``alpha_bar`` is near 0 for any ``T``)."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 2:
        raise ValueError(f"timesteps must be an int >= 2, got {timesteps!r}")
    scale = 1000.0 / timesteps
    betas = torch.linspace(BETA_START * scale, min(BETA_END * scale, 0.999), timesteps, dtype=torch.float64)
    alpha_bars = torch.cumprod(1.0 - betas, 0)
    return betas.float().to(device), alpha_bars.float().to(device)


def _per_item(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``values[t]`` shaped ``(B, 1, ..., 1)`` to broadcast over a ``(B, C, *S)`` batch."""
    return values.to(t.device)[t].view(-1, *([1] * (ndim - 1)))


def q_sample(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bars: torch.Tensor
) -> torch.Tensor:
    """Forward diffusion ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``: a draw of ``q(x_t | x0)``, whose mean
    is ``sqrt(abar_t) x0`` and variance ``(1 - abar_t)`` when ``noise`` is standard normal.

    Args:
        x0: clean images ``(B, C, *S)``; t: integer steps ``(B,)`` in ``[0, T)``; noise: like ``x0``;
        alpha_bars: ``(T,)`` from :func:`noise_schedule`.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    if t.ndim != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(
            f"t must have shape ({x0.shape[0]},) (one step per batch item), got {tuple(t.shape)}"
        )
    if int(t.min()) < 0 or int(t.max()) >= alpha_bars.shape[0]:
        raise ValueError(f"t must lie in [0, {alpha_bars.shape[0]}), got {t.tolist()}")
    ab = _per_item(alpha_bars, t, x0.ndim).to(x0.dtype)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def diffusion_loss(predicted_noise: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The DDPM "simple" loss: mean squared error between the predicted and the true noise (0 when exact)."""
    if predicted_noise.shape != noise.shape:
        raise ValueError(
            f"predicted_noise shape {tuple(predicted_noise.shape)} must equal noise shape {tuple(noise.shape)}"
        )
    return (predicted_noise - noise).pow(2).mean()


def time_embedding(t: torch.Tensor, dim: int = TIME_DIM) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of integer steps ``(B,)`` (as in Transformers and DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], 1)


@dataclass(frozen=True)
class DiffuseMorphConfig:
    widths: tuple[int, ...] = param((16, 32, 32, 32), "Deformation U-Net channels per level, finest first.")
    diffusion_widths: tuple[int, ...] = param(
        (16, 32, 32, 32), "Diffusion (denoising) U-Net channels per level, finest first."
    )
    feature_channels: int = param(
        3,
        "Feature maps the diffusion net hands the deformation net besides its noise estimate.",
        range=(0, 32),
    )
    timesteps: int = param(1000, "Diffusion steps T of the linear DDPM noise schedule.", range=(10, 4000))
    diffusion_weight: float = param(
        0.1,
        "Weight of the diffusion (noise-prediction) loss against the registration loss.",
        range=(0.0, 100.0),
    )
    int_steps: int = param(7, "Scaling-and-squaring steps integrating the velocity.", range=(1, 12))


@dataclass(frozen=True)
class DiffuseMorphSettings(LearnedSettings):
    gamma: float = param(
        1.0,
        "Deformation strength: the field is exp(gamma v); gamma < 1 stops part-way.",
        range=(0.0, 1.0),
        step=0.05,
    )
    trajectory_steps: int = param(8, "Intermediate deformations exp(s v), s from 0 to gamma.", range=(2, 10))
    sampling_steps: int = param(
        4,
        "Reverse-diffusion (DDIM) steps shown as maps; 0 = none (the field never depends on them).",
        range=(0, 50),
    )
    sampling_start: int = param(
        100,
        "Noise level t the shown reverse diffusion starts from (< the model's timesteps).",
        range=(1, 3999),
    )
    seed: int = param(0, "Seed of the noise of the shown reverse diffusion.", range=(0, 2**31 - 1))


def _check_pair(moving: torch.Tensor, fixed: torch.Tensor) -> None:
    for name, x in (("moving", moving), ("fixed", fixed)):
        if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5) or x.shape[1] != 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (B, 1, *S) tensor with 2 or 3 spatial axes, got {got}")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving shape {tuple(moving.shape)} must equal fixed shape {tuple(fixed.shape)}")


def _check_settings(settings: DiffuseMorphSettings, config: DiffuseMorphConfig) -> None:
    """ValueError naming the first registration setting out of range (before any work is done)."""
    if not 0.0 <= float(settings.gamma) <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {settings.gamma}")
    if not 2 <= int(settings.trajectory_steps) <= 10:
        raise ValueError(f"trajectory_steps must be in [2, 10], got {settings.trajectory_steps}")
    if int(settings.sampling_steps) < 0:
        raise ValueError(f"sampling_steps must be >= 0, got {settings.sampling_steps}")
    if int(settings.sampling_steps) and not 1 <= int(settings.sampling_start) < config.timesteps:
        raise ValueError(
            f"sampling_start must lie in [1, {config.timesteps}) (the model's timesteps), "
            f"got {settings.sampling_start}"
        )


@register_family
class DiffuseMorph(LearnedFamily):
    name = "diffusemorph"
    title = "DiffuseMorph (diffusion-model registration)"
    paper = "Kim, Han & Ye, DiffuseMorph: unsupervised deformable image registration using diffusion model, ECCV 2022"
    summary = (
        "A denoising diffusion model learns to clean up a noisy copy of the fixed image while looking at the "
        "moving image; what it computes on the way (its noise estimate and feature maps, the score) tells a "
        "second network how the two images differ. That network outputs a smooth velocity field, and "
        "following it for longer or shorter gives a continuous morph from the moving image towards the fixed "
        "one, with no folding. Both networks are trained together: denoising loss plus image similarity and "
        "smoothness."
    )
    supervision = Supervision.UNSUPERVISED
    Config = DiffuseMorphConfig
    Settings = DiffuseMorphSettings

    def build(self, dims: int, config: DiffuseMorphConfig) -> nn.ModuleDict:
        out = 1 + config.feature_channels
        return nn.ModuleDict(
            {
                "diffusion": ConvUNet(
                    dims,
                    in_channels=2,
                    out_channels=out,
                    widths=config.diffusion_widths,
                    condition_dim=TIME_DIM,
                ),
                "deformation": ConvUNet(dims, in_channels=2 + out, out_channels=dims, widths=config.widths),
            }
        )

    def divisor(self, dims: int, config: DiffuseMorphConfig) -> int:
        return max(ConvUNet.divisor_for(config.widths), ConvUNet.divisor_for(config.diffusion_widths))

    def recipe(self, dims: int) -> dict:
        return {**super().recipe(dims), "supervision": "unsupervised", "similarity": "lncc"}

    # -- the two networks ---------------------------------------------------------------------------
    def denoise(self, nets, moving: torch.Tensor, noisy_fixed: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Diffusion net output ``(B, 1 + feature_channels, *S)``: channel 0 is the noise estimate of ``x_t``."""
        return nets["diffusion"](torch.cat([moving, noisy_fixed], 1), time_embedding(t))

    def velocity(self, nets, moving: torch.Tensor, fixed: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Deformation net: ``(m, f, score features)`` -> stationary velocity ``(B, n, *S)`` voxels, fixed -> moving."""
        return nets["deformation"](torch.cat([moving, fixed, score], 1))

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        from regcore.train.objectives import registration_losses

        cfg = ctx.family_config
        m, f = batch["moving"], batch["fixed"]
        _, alpha_bars = noise_schedule(cfg.timesteps, f.device)
        t = torch.randint(0, cfg.timesteps, (f.shape[0],), device=f.device)
        noise = torch.randn_like(f)
        score = self.denoise(nets, m, q_sample(f, t, noise, alpha_bars), t)
        v = self.velocity(nets, m, f, score)
        pred = Prediction(displacement=integrate_svf(v, cfg.int_steps), velocity=v)
        terms = registration_losses(ctx.config, pred, batch, ctx.similarity)
        terms["diffusion"] = diffusion_loss(score[:, :1], noise)
        terms["total"] = terms["total"] + cfg.diffusion_weight * terms["diffusion"]
        return terms

    # -- inference ------------------------------------------------------------------------------------
    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: DiffuseMorphConfig, settings=None
    ) -> Prediction:
        """Velocity from the score at ``t = 0`` (clean fixed), ``u = exp(gamma v)`` (``gamma`` from ``settings``;
        1 during training). The views (trajectory, reverse diffusion) come from :meth:`explain`."""
        _check_pair(moving, fixed)
        zero = torch.zeros(fixed.shape[0], dtype=torch.long, device=fixed.device)
        v = self.velocity(nets, moving, fixed, self.denoise(nets, moving, fixed, zero))
        if settings is None:  # training-time validation: the full field only
            return Prediction(displacement=integrate_svf(v, config.int_steps), velocity=v)
        _check_settings(settings, config)
        gamma = float(settings.gamma)
        v = gamma * v
        return Prediction(
            displacement=integrate_svf(v, config.int_steps), velocity=v, extras={"gamma": gamma}
        )

    def explain(
        self, nets, moving, fixed, config: DiffuseMorphConfig, settings, prediction: Prediction
    ) -> Prediction:
        """The continuous deformation ``exp(s v)`` for ``trajectory_steps`` values of ``s`` in [0, gamma]
        (``Prediction.trajectory``), the score map at ``t = 0`` and the reverse-diffusion maps (``extras``)."""
        k = int(settings.trajectory_steps)
        v, u = prediction.velocity, prediction.displacement
        trajectory = [torch.zeros_like(u)]
        trajectory += [integrate_svf(v * (i / (k - 1)), config.int_steps) for i in range(1, k - 1)]
        trajectory.append(u)
        extras = self.reverse_diffusion(nets, moving, fixed, config, settings)
        zero = torch.zeros(fixed.shape[0], dtype=torch.long, device=fixed.device)
        eps0 = self.denoise(nets, moving, fixed, zero)[:1, :1]
        lo, hi = eps0.amin(), eps0.amax()
        extras["maps"]["score (noise estimate at t=0, min-max scaled)"] = (eps0 - lo) / (hi - lo).clamp_min(
            1e-8
        )
        extras.update(trajectory_steps=float(k))
        prediction.trajectory = trajectory
        prediction.extras.update(extras)
        return prediction

    def reverse_diffusion(self, nets, moving, fixed, config: DiffuseMorphConfig, settings) -> dict:
        """Deterministic DDIM (eta = 0) from the fixed image noised to ``sampling_start`` down to ``t = 0`` in
        ``sampling_steps`` steps, conditioned on the moving image. Returns extras: ``sampling_steps``,
        ``diffusion_loss`` (noise MSE at the start), ``denoising_mse`` (final estimate vs the fixed image) and
        ``maps`` (the noisy start, a middle step and the final clean estimate, first batch item)."""
        _check_settings(settings, config)
        steps, start = int(settings.sampling_steps), int(settings.sampling_start)
        out: dict = {"sampling_steps": float(steps), "maps": {}}
        if steps == 0:
            return out
        _, alpha_bars = noise_schedule(config.timesteps, fixed.device)
        gen = torch.Generator(device="cpu").manual_seed(int(settings.seed))
        noise = torch.randn(fixed.shape, generator=gen).to(fixed)
        b = fixed.shape[0]
        ts = sorted({round(start * (1 - i / steps)) for i in range(steps)}, reverse=True)  # start ... > 0
        x = q_sample(fixed, torch.full((b,), start, dtype=torch.long, device=fixed.device), noise, alpha_bars)
        out["maps"][f"noisy fixed (t={start})"] = x[:1].clamp(0, 1)
        for i, t in enumerate(ts):
            eps = self.denoise(nets, moving, x, torch.full((b,), t, dtype=torch.long, device=fixed.device))[
                :, :1
            ]
            if i == 0:
                out["diffusion_loss"] = float(diffusion_loss(eps, noise))
            ab = alpha_bars[t]
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            nxt = ts[i + 1] if i + 1 < len(ts) else 0
            ab_next = alpha_bars[nxt]
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps if nxt > 0 else x0
            if i == len(ts) // 2 - 1 and len(ts) > 2:
                out["maps"][f"denoised estimate (step {i + 1}/{len(ts)})"] = x0[:1].clamp(0, 1)
        out["maps"]["denoised fixed (final)"] = x[:1].clamp(0, 1)
        out["denoising_mse"] = float((x - fixed).pow(2).mean())
        out["sampling_steps"] = float(len(ts))
        return out
