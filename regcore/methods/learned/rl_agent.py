"""Deep RL registration agent (Liao et al., AAAI 2017): rigid 2D registration as a sequence of discrete moves.

An *agent* looks at the fixed image and the currently warped moving image and picks one of a few
discrete actions: translate by +-d along tensor axis 0 or 1, or rotate by +-a degrees about the image
centre, at three step sizes (coarse, medium, fine). A small CNN predicts, for every action, how many
voxels of misalignment the action removes (its *action value*); the agent takes the best action,
re-warps, and repeats until no action is predicted to help (the stop rule) or ``max_steps``.

Training follows Liao et al.'s supervised action-value learning rather than DQN: for a synthetic
misalignment the true transform is known, so the exact value of every action,
``Q(s, a) = D(R) - D(R o delta_a)`` (``D`` = mean distance in voxels that a grid of points is moved
by the residual transform ``R``), can be computed in closed form and regressed directly for all
actions at once. No exploration, replay buffer or bootstrapped targets are needed (Liao report this
converges faster and more stably than Q-learning); the price is a greedy one-step policy, which is
enough here because a rigid distance decreases monotonically along good moves.

Conventions: images ``(B, 1, H, W)`` in [0, 1] on the model grid. Every affine is ``(B, 2, 3)`` in
voxels of the model grid, fixed voxel -> moving voxel (``warped = moving o A``), like
:class:`~regcore.methods.learned.family.Prediction.affine`. An action ``delta`` is applied in the
fixed frame, ``A <- A o delta``, so action "+t0" moves the *sample points* by +d along axis 0 (the
image content appears to move by -d). 2D only; 3D (12 actions at 3 scales on volumes) is not
affordable to train on this project's CPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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
from regcore.spatial.affine import (
    affine_to_displacement,
    compose_affine,
    invert_affine,
    matrix_to_rigid_params,
    rigid_matrix,
)
from regcore.spatial.warp import warp


@dataclass(frozen=True)
class RLAgentConfig:
    channels: tuple[int, ...] = param(
        (8, 16, 32, 32, 64), "Widths of the value network's stride-2 conv levels.", range=(1, 256)
    )
    translation_steps: tuple[float, ...] = param(
        (4.0, 1.0, 0.25), "Translation step per scale (model voxels), coarse to fine.", range=(0.01, 50.0)
    )
    rotation_steps: tuple[float, ...] = param(
        (4.0, 1.0, 0.25), "Rotation step per scale (degrees), coarse to fine.", range=(0.01, 45.0)
    )
    max_rotation_deg: float = param(
        33.0, "Training: largest random rotation of a misaligned copy (degrees).", range=(0.0, 180.0)
    )
    max_shift_fraction: float = param(
        0.22, "Training: largest random shift per axis, as a fraction of the grid size.", range=(0.0, 0.5)
    )
    states_per_image: int = param(
        4, "Training: misaligned states made from each fixed image per step.", range=(1, 64)
    )
    small_fraction: float = param(
        0.5, "Training: fraction of states near alignment (log-uniformly shrunk misalignments).", range=(0, 1)
    )


@dataclass(frozen=True)
class RLAgentSettings(LearnedSettings):
    max_steps: int = param(150, "Most actions per episode.", range=(1, 2000))
    stop_value: float = param(
        -0.05,
        "Stop when no action is predicted to remove more than this many voxels (slightly negative: keep "
        "making fine moves until the agent oscillates; chosen on training slice positions).",
        range=(-5.0, 5.0),
    )


class ActionValueNet(nn.Module):
    """``(B, 2, H, W)`` pair -> ``(B, n_actions)`` normalised action values.

    Inputs are the pair plus two coordinate channels in [-1, 1]; stride-2 convs, adaptive pooling to a
    4x4 grid (keeps where features are, which rotations need), a hidden layer and a linear output.
    """

    def __init__(self, n_actions: int, channels: tuple[int, ...] = (8, 16, 32, 32, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 4
        for i, c in enumerate(channels):
            k = 3
            layers += [nn.Conv2d(cin, c, k, stride=2, padding=k // 2), nn.LeakyReLU(0.2, inplace=True)]
            cin = c
        self.encoder = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Sequential(
            nn.Linear(cin * 16, 128), nn.LeakyReLU(0.2, inplace=True), nn.Linear(128, n_actions)
        )

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pair.shape
        ys = (
            torch.linspace(-1, 1, h, device=pair.device, dtype=pair.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        )
        xs = (
            torch.linspace(-1, 1, w, device=pair.device, dtype=pair.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        )
        return self.head(self.pool(self.encoder(torch.cat([pair, ys, xs], 1))).flatten(1))


def action_table(config: RLAgentConfig) -> list[tuple[str, int, float, float]]:
    """Every action as ``(name, scale index, angle in degrees, translation (t0, t1) as a 2-vector)``."""
    if len(config.translation_steps) != len(config.rotation_steps):
        raise ValueError(
            f"translation_steps {config.translation_steps} and rotation_steps {config.rotation_steps} "
            "must have one entry per scale"
        )
    out: list[Any] = []
    for s, (dt, da) in enumerate(zip(config.translation_steps, config.rotation_steps)):
        for sign in (1.0, -1.0):
            ch = "+" if sign > 0 else "-"
            out.append((f"{ch}t0 {dt:g} vox", s, 0.0, (sign * dt, 0.0)))
            out.append((f"{ch}t1 {dt:g} vox", s, 0.0, (0.0, sign * dt)))
            out.append((f"{ch}rot {da:g} deg", s, sign * da, (0.0, 0.0)))
    return out


def action_matrices(config: RLAgentConfig, shape: tuple[int, int], device=None) -> torch.Tensor:
    """``(n_actions, 2, 3)`` voxel matrices of the actions on a grid of ``shape`` (rotation about its centre)."""
    table = action_table(config)
    angles = torch.tensor([[math.radians(a[2])] for a in table], device=device)
    trans = torch.tensor([a[3] for a in table], device=device)
    return rigid_matrix(angles, trans, shape)


def distance_points(shape: tuple[int, int], device=None, n: int = 9) -> torch.Tensor:
    """``(n*n, 2)`` voxel points on a regular grid over the central 80 % of ``shape``, where ``D`` is measured."""
    axes = [torch.linspace(0.1 * (s - 1), 0.9 * (s - 1), n, device=device) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)


def transform_distance(residual: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``D(R)``: mean distance (voxels) that ``R`` ``(..., 2, 3)`` moves ``points`` ``(P, 2)`` -> ``(...)``."""
    moved = torch.einsum("...ij,pj->...pi", residual[..., :2], points) + residual[..., None, :, 2]
    return (moved - points).norm(dim=-1).mean(-1)


def action_values(residual: torch.Tensor, actions: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Exact action values ``Q = D(R) - D(R o delta_a)`` ``(B, n_actions)`` voxels, for residuals ``(B, 2, 3)``.

    ``R = A_true^-1 o A`` maps fixed points to where the current warped image samples the fixed image's
    content; a positive value means the action brings the estimate closer to the true transform.
    """
    b, k = residual.shape[0], actions.shape[0]
    after = compose_affine(residual[:, None].expand(b, k, 2, 3).reshape(-1, 2, 3), actions.repeat(b, 1, 1))
    return transform_distance(residual, points)[:, None] - transform_distance(after, points).view(b, k)


def random_rigid(b: int, shape: tuple[int, int], max_deg: float, max_frac: float, g: torch.Generator):
    """``(b, 2, 3)`` random rigid voxel matrices: angle ~ U(+-max_deg), shift_i ~ U(+-max_frac * S_i)."""
    ang = (torch.rand(b, 1, generator=g) * 2 - 1) * math.radians(max_deg)
    t = (torch.rand(b, 2, generator=g) * 2 - 1) * max_frac * torch.tensor(shape, dtype=torch.float32)
    return ang, t


def _check_pair(moving: torch.Tensor, fixed: torch.Tensor) -> None:
    for name, t in (("moving", moving), ("fixed", fixed)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] != 1:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, 1, H, W) tensor (2D only), got {got}")
    if moving.shape != fixed.shape:
        raise ValueError(
            f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must have the same shape"
        )


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Global normalised cross-correlation per batch item ``(B,)``."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


def _warp_affine(image: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    return warp(image, affine_to_displacement(affine, tuple(image.shape[2:])), padding_mode="zeros")


@register_family
class RLAgent(LearnedFamily):
    name = "rl_agent"
    title = "Deep RL agent (discrete rigid moves)"
    paper = "Liao et al., An artificial agent for robust image registration, AAAI 2017"
    summary = (
        "Registration as a game: an agent looks at the two images and moves the moving one in small "
        "discrete steps (shift up/down/left/right, rotate left/right; coarse, medium and fine steps). "
        "A small CNN predicts how much each move would reduce the misalignment; the agent takes the "
        "best move and repeats until no move helps. The Mechanism view of Evaluate replays the episode step by step."
    )
    supervision = Supervision.FULL
    Config = RLAgentConfig
    Settings = RLAgentSettings
    dims = (2,)

    def build(self, dims: int, config: RLAgentConfig) -> nn.ModuleDict:
        if dims != 2:
            raise ValueError(f"rl_agent is 2D only, got dims={dims}")
        return nn.ModuleDict({"q": ActionValueNet(len(action_table(config)), tuple(config.channels))})

    def recipe(self, dims: int) -> dict[str, Any]:
        return {"spacing_mm": 2.0, "train_shape": (96, 112), "supervision": "full"}

    def action_scale(self, config: RLAgentConfig, shape: tuple[int, int], device=None) -> torch.Tensor:
        """``(n_actions,)`` voxels: ``D(delta_a)``, the largest possible |value| of each action (target normaliser)."""
        return transform_distance(action_matrices(config, shape, device), distance_points(shape, device))

    # -- training -----------------------------------------------------------------------------------
    def make_states(
        self, fixed: torch.Tensor, config: RLAgentConfig, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Misaligned copies of ``fixed`` ``(B, 1, H, W)``: ``(fixed_rep, warped, residual)``.

        Each copy gets a random true transform ``A_true`` (moving = fixed o A_true^-1, content leaving the
        grid is lost as in a real misaligned image) and a current estimate ``A = A_true o R`` with a random
        residual ``R`` (large, or log-uniformly shrunk toward identity); ``warped = moving o A``.
        """
        k = config.states_per_image
        shape = tuple(fixed.shape[2:])
        f = fixed.repeat_interleave(k, 0)
        n = f.shape[0]
        a0, t0 = random_rigid(n, shape, config.max_rotation_deg, config.max_shift_fraction, g)
        true = rigid_matrix(a0, t0, shape).to(fixed)
        ar, tr = random_rigid(n, shape, config.max_rotation_deg, config.max_shift_fraction, g)
        shrink = torch.where(
            torch.rand(n, 1, generator=g) < config.small_fraction,
            10 ** (-2.0 * torch.rand(n, 1, generator=g)),
            torch.ones(n, 1),
        )
        residual = rigid_matrix(ar * shrink, tr * shrink, shape).to(fixed)
        moving = _warp_affine(f, invert_affine(true))
        moving = (moving + 0.02 * torch.randn(moving.shape, generator=g).to(fixed)).clamp(0, 1)
        warped = _warp_affine(moving, compose_affine(true, residual))
        return f, warped, residual

    def losses(self, nets, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """MSE between predicted and exact normalised action values on misaligned copies of ``batch["fixed"]``."""
        cfg = ctx.family_config
        fixed = batch["fixed"]
        if not isinstance(fixed, torch.Tensor) or fixed.ndim != 4 or fixed.shape[1] != 1:
            got = tuple(fixed.shape) if isinstance(fixed, torch.Tensor) else type(fixed).__name__
            raise ValueError(f"batch['fixed'] must be a (B, 1, H, W) tensor (2D only), got {got}")
        shape = tuple(fixed.shape[2:])
        g = torch.Generator().manual_seed(int(ctx.step) if nets.training else 12345)
        f, warped, residual = self.make_states(fixed, cfg, g)
        scale = self.action_scale(cfg, shape, fixed.device)
        target = action_values(
            residual, action_matrices(cfg, shape, fixed.device), distance_points(shape, fixed.device)
        )
        target = target / scale
        pred = nets["q"](torch.cat([f, warped], 1))
        mse = F.mse_loss(pred, target)
        greedy = (pred.argmax(1) == target.argmax(1)).float().mean()
        helps = torch.gather(target, 1, pred.argmax(1, keepdim=True)).gt(0).float().mean()
        return {
            "total": mse,
            "value_mse": mse,
            "greedy_match": greedy.detach(),
            "chosen_helps": helps.detach(),
        }

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: RLAgentConfig, settings=None
    ) -> Prediction:
        """Greedy episode from identity; returns the rigid ``affine`` ``(B, 2, 3)`` (model voxels, fixed ->
        moving), its displacement, and for the first batch item ``extras["episode"]`` (one dict per step:
        action, reward = predicted misalignment removed in voxels, score = NCC of fixed and warped, affine)."""
        _check_pair(moving, fixed)
        max_steps = int(getattr(settings, "max_steps", RLAgentSettings.max_steps))
        stop_value = float(getattr(settings, "stop_value", RLAgentSettings.stop_value))
        b, shape, dev = fixed.shape[0], tuple(fixed.shape[2:]), fixed.device
        table = action_table(config)
        acts = action_matrices(config, shape, dev).to(fixed.dtype)
        scale = self.action_scale(config, shape, dev).to(fixed.dtype)
        scale_of = torch.tensor([a[1] for a in table], device=dev)
        n_scales = len(config.translation_steps)
        affine = torch.eye(2, 3, device=dev, dtype=fixed.dtype).repeat(b, 1, 1)
        level = [0] * b  # coarsest scale still allowed (raised when the agent revisits a state)
        active = [True] * b
        seen: list[set] = [set() for _ in range(b)]
        episode: list[dict[str, Any]] = []
        history: list[float] = []

        def key(m: torch.Tensor) -> tuple:
            ang, t = matrix_to_rigid_params(m[None], shape)
            return (round(float(ang) * 1e4), round(float(t[0, 0]) * 1e3), round(float(t[0, 1]) * 1e3))

        def record(action: str, reward: float, warped0: torch.Tensor) -> None:
            score = float(_ncc(fixed[:1], warped0[:1])[0])
            history.append(-score)
            episode.append(
                {"action": action, "reward": reward, "score": score, "affine": affine[0].detach().clone()}
            )

        for i in range(b):
            seen[i].add(key(affine[i]))
        warped = _warp_affine(moving, affine)
        record("start", 0.0, warped)
        steps = 0
        while any(active) and steps < max_steps:
            q = nets["q"](torch.cat([fixed, warped], 1)) * scale
            for i in range(b):
                if not active[i]:
                    continue
                while True:
                    qi = q[i].masked_fill(scale_of < level[i], -float("inf"))
                    best = int(qi.argmax())
                    if float(qi[best]) <= stop_value:
                        active[i] = False
                        break
                    cand = compose_affine(affine[i : i + 1], acts[best : best + 1])[0]
                    if key(cand) in seen[i]:  # oscillation: drop the coarsest allowed scale
                        level[i] += 1
                        if level[i] >= n_scales:
                            active[i] = False
                            break
                        continue
                    seen[i].add(key(cand))
                    affine[i] = cand
                    if i == 0:
                        episode.append({"action": table[best][0], "reward": float(qi[best])})
                    break
            steps += 1
            warped = _warp_affine(moving, affine)
            if len(episode) > len(history):
                score = float(_ncc(fixed[:1], warped[:1])[0])
                history.append(-score)
                episode[-1].update(score=score, affine=affine[0].detach().clone())
        record("stop", 0.0, warped)
        extras: dict[str, Any] = {
            "episode": episode,
            "loss_history": history,
            "episode_steps": float(len(episode) - 2),
        }
        disp = affine_to_displacement(affine, shape)
        return Prediction(displacement=disp, affine=affine, extras=extras)


def rigid_parameters(affine: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """``(B, 3)`` numpy ``[angle_deg, t0, t1]`` of rigid voxel matrices (for reports)."""
    ang, t = matrix_to_rigid_params(affine, shape)
    return torch.cat([torch.rad2deg(ang), t], 1).detach().cpu().numpy()
