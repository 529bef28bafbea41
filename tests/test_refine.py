"""Instance optimisation (regcore.methods.learned.refine): starts from a given field and lowers LNCC."""

import math

import pytest
import torch

from regcore.methods.learned.refine import refine_displacement
from regcore.spatial.warp import warp


def _texture(shape=(64, 64)) -> torch.Tensor:
    """Smooth random texture ``(1, 1, *shape)`` (structure everywhere, as in a brain slice)."""
    from regcore.spatial.smooth import gaussian_smooth

    noise = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(0))
    return gaussian_smooth(noise, (2.0, 2.0))


def _shift_field(shape, dy: float, dx: float) -> torch.Tensor:
    u = torch.zeros(1, 2, *shape)
    u[:, 0], u[:, 1] = dy, dx
    return u


def _error(u: torch.Tensor, truth: torch.Tensor) -> float:
    inner = (slice(None), slice(None), slice(12, -12), slice(12, -12))  # away from the border
    return float((u - truth)[inner].norm(dim=1).mean())


def test_a_correct_start_is_kept_and_a_wrong_one_moves_towards_the_truth():
    moving = _texture()
    truth = _shift_field(moving.shape[2:], 2.0, -1.5)
    fixed = warp(moving, truth)  # fixed(x) = moving(x + truth): the exact answer is ``truth``
    kept = refine_displacement(fixed, moving, truth, 25)
    assert _error(kept, truth) < 0.15
    start = torch.zeros_like(truth)
    moved = refine_displacement(fixed, moving, start, 25)
    assert not start.any()  # the caller's field is read, never written (the levels update their own copy)
    assert _error(moved, truth) < 0.5 * _error(start, truth), (_error(moved, truth), math.hypot(2.0, 1.5))


def test_zero_iterations_return_the_input_and_bad_input_names_the_field():
    moving = _texture((32, 32))
    u = torch.zeros(1, 2, 32, 32)
    assert refine_displacement(moving, moving, u, 0) is u
    with pytest.raises(ValueError, match="displacement must be"):
        refine_displacement(moving, moving, torch.zeros(1, 2, 16, 32), 5)
    with pytest.raises(ValueError, match="refine_smoothing"):
        refine_displacement(moving, moving, u, 5, smoothing=-1.0)
