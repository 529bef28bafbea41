"""What a learned family shows of its mechanism, read from a registration result.

A family's :class:`~regcore.methods.learned.family.Prediction` may carry a *trajectory* (a neural ODE's path,
a diffusion model's continuous deformation), an *episode* (an RL agent's actions), a *loss history* (a per-pair
optimiser's convergence) and named *maps* (a discriminator's score, a learned similarity, representations).
Inference puts them on the image grid in ``RegistrationResult.extras`` (``trajectory``, ``episode``,
``loss_history``, ``maps``); this module turns them into 2D frames for the app and notebooks.

Frames are ``(H, W)`` float arrays of one slice (2D images: the image itself): the moving image warped by the
transform at that step of the path. Displacements are fixed-grid voxels, fixed -> moving, as everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MECHANISM_KEYS = ("trajectory", "episode", "loss_history", "maps")


def has_mechanism(extras: dict[str, Any]) -> bool:
    """True when a result's extras hold anything :mod:`regcore.mechanism` can show."""
    return any(extras.get(k) for k in MECHANISM_KEYS)


def _slice(volume: np.ndarray, axis: int | None, index: int | None) -> np.ndarray:
    """``(*S)`` -> ``(H, W)`` at ``axis``/``index`` (2D input unchanged)."""
    if volume.ndim == 2 or axis is None or index is None:
        return volume
    return np.take(volume, int(index), axis=int(axis))


def _warp_moving(moving: torch.Tensor, displacement: torch.Tensor) -> np.ndarray:
    """``moving (1, C, *S)`` warped by ``displacement (1, n, *S)`` -> ``(*S)`` array of channel 0."""
    from regcore.spatial.warp import warp

    return warp(moving[:, :1].float(), displacement.float())[0, 0].numpy()


def trajectory_length(result: Any) -> int:
    """Number of steps of the family's trajectory (0 when it has none)."""
    return len(result.extras.get("trajectory") or [])


def trajectory_frame(result: Any, k: int, axis: int | None = None, index: int | None = None) -> np.ndarray:
    """The moving image at step ``k`` of the trajectory, ``(H, W)``: one warp (a slider redraw needs no more)."""
    path = result.extras.get("trajectory") or []
    return _slice(_warp_moving(result.moving.batch().cpu(), path[k]), axis, index)


def trajectory_frames(result: Any, axis: int | None = None, index: int | None = None) -> list[np.ndarray]:
    """The moving image carried along the family's trajectory, one ``(H, W)`` frame per step (t = 0 ... 1)."""
    return [trajectory_frame(result, k, axis, index) for k in range(trajectory_length(result))]


@dataclass(frozen=True)
class EpisodeStep:
    """One step of an agent's episode: the action taken, its reward, the score after it and the warped frame."""

    step: int
    action: str
    reward: float
    score: float
    frame: np.ndarray | None


def episode_frame(result: Any, k: int, axis: int | None = None, index: int | None = None) -> np.ndarray:
    """The moving image after step ``k`` (0-based) of an RL episode, ``(H, W)``: under the last affine at or
    before ``k``; the unregistered moving image when no step so far has one. One warp."""
    from regcore.spatial.affine import affine_to_displacement

    moving = result.moving.batch().cpu()
    episode = (result.extras.get("episode") or [])[: k + 1]
    affine = next((s["affine"] for s in reversed(episode) if torch.is_tensor(s.get("affine"))), None)
    if affine is None:
        return _slice(moving[0, 0].float().numpy(), axis, index)
    u = affine_to_displacement(affine[None].float(), tuple(moving.shape[2:]))
    return _slice(_warp_moving(moving, u), axis, index)


def episode_steps(
    result: Any, axis: int | None = None, index: int | None = None, *, frames: bool = True
) -> list[EpisodeStep]:
    """An RL agent's episode replayed on the image grid: action, reward, score and (``frames``) the moving image
    after each step (see :func:`episode_frame`); ``frames=False`` leaves ``frame`` None (no warps)."""
    return [
        EpisodeStep(
            step=k + 1,
            action=str(step.get("action", "")),
            reward=float(step.get("reward", float("nan"))),
            score=float(step.get("score", float("nan"))),
            frame=episode_frame(result, k, axis, index) if frames else None,
        )
        for k, step in enumerate(result.extras.get("episode") or [])
    ]


def mechanism_maps(result: Any, axis: int | None = None, index: int | None = None) -> dict[str, np.ndarray]:
    """The family's named maps as ``(H, W)`` arrays of the shown slice."""
    maps = result.extras.get("maps") or {}
    return {
        name: _slice(m.reshape(m.shape[-result.fixed.ndim :]).numpy(), axis, index)
        for name, m in maps.items()
    }


def loss_history(result: Any) -> list[float]:
    """Per-iteration loss of a per-pair optimiser (empty when the family has none)."""
    return [float(v) for v in result.extras.get("loss_history") or []]
