"""Per-pair learned families (no training set): INR (IDIR) and neural ODE (NODEO).

Analytic checks of the point-wise tools against regcore's warp and Jacobian, then one short real
registration per family on a sample brain pair (Dice improves, no folding) and a real OASIS slice
pair when ../shared/data is present.
"""

from __future__ import annotations

import pytest
import torch

from regcore.data import sample_pair
from regcore.methods.learned.neural_ode import VelocityNet, integrate_flow
from regcore.methods.learned.pointwise import (
    grid_points,
    jacobian_determinant_at,
    normalised_to_voxels,
    point_ncc_loss,
    sample_at,
    stencil_determinant_at,
)
from regcore.metrics import evaluate_identity
from regcore.register import run_pair
from regcore.spatial.jacobian import jacobian_determinant
from regcore.spatial.warp import warp


def test_points_sample_the_grid_and_match_warp():
    image = torch.rand(1, 1, 7, 9)
    points = grid_points((7, 9))
    assert torch.allclose(sample_at(image, points), image.reshape(-1), atol=1e-6)
    shift = torch.zeros(1, 2, 7, 9)
    shift[:, 0], shift[:, 1] = 1.5, -2.0  # voxels along tensor axes 0 and 1
    normalised = torch.tensor([1.5 * 2 / 6, -2.0 * 2 / 8])
    moved = sample_at(image, points + normalised).reshape(7, 9)
    expected = warp(image, shift, padding_mode="zeros")[0, 0]
    assert torch.allclose(moved[:5, 2:], expected[:5, 2:], atol=1e-5)  # inside the image


def test_normalised_displacements_become_voxels_per_axis():
    u = torch.zeros(7 * 9, 2)
    u[:, 0], u[:, 1] = 1.0, -0.5
    v = normalised_to_voxels(u, (7, 9))
    assert v.shape == (1, 2, 7, 9)
    assert torch.allclose(v[0, 0], torch.full((7, 9), 3.0)) and torch.allclose(
        v[0, 1], torch.full((7, 9), -2.0)
    )


def test_autograd_jacobian_matches_the_linear_map_and_the_grid_jacobian():
    a = torch.tensor([[0.1, 0.2], [0.3, -0.1]])
    x = torch.randn(50, 2, requires_grad=True)
    det = jacobian_determinant_at(x @ a.T, x)
    assert torch.allclose(det, torch.full((50,), float(torch.det(torch.eye(2) + a))), atol=1e-6)
    # the same affine map on a voxel grid, through regcore's finite-difference Jacobian
    shape = (16, 20)
    u = normalised_to_voxels(grid_points(shape) @ a.T, shape)
    assert torch.allclose(jacobian_determinant(u)[0, 2:-2, 2:-2], det[0], atol=1e-4)


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
def test_stencil_jacobian_at_voxel_centres_is_the_grid_jacobian_border_included(shape):
    """A wavy (non-linear) field: the stencil determinant at every voxel centre equals regcore's grid determinant
    of the same field sampled on the grid, one-sided differences at the border included; off the grid it is
    differentiable."""
    n = len(shape)
    freq = torch.arange(1, n + 1, dtype=torch.float32)

    def field(x: torch.Tensor) -> torch.Tensor:
        return 0.3 * torch.sin(3.0 * x * freq + x.sum(dim=1, keepdim=True)).flip(-1)

    points = grid_points(shape)
    grid_det = jacobian_determinant(normalised_to_voxels(field(points), shape)).reshape(-1)
    assert grid_det.min() < 0.5 < grid_det.max()  # a field that is far from a translation
    assert torch.allclose(stencil_determinant_at(field, points, shape), grid_det, atol=1e-4)
    x = (torch.rand(20, n) * 2 - 1).requires_grad_(True)
    stencil_determinant_at(field, x, shape).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_ncc_loss_is_zero_for_a_linear_intensity_change_and_positive_otherwise():
    a = torch.rand(500)
    assert float(point_ncc_loss(a, 3 * a + 1)) < 1e-5
    assert float(point_ncc_loss(a, torch.rand(500))) > 0.5


def test_a_zero_velocity_flow_is_the_identity_and_a_constant_one_translates():
    net = VelocityNet(2, channels=2, smoothing_sigma=0.0)
    net.reset((12, 16), torch.Generator().manual_seed(0), "cpu")
    with torch.no_grad():
        path = integrate_flow(net, steps=4, solver="rk4")
    assert len(path) == 5 and float(path[-1].abs().max()) == 0.0  # zero-initialised output layer
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([0.25, -0.5]))  # v = LATENT_FACTOR * bias, constant in space and time
        u = integrate_flow(net, steps=4, solver="euler")[-1]
    assert torch.allclose(u[0, 0], torch.full((12, 16), 1.0), atol=1e-5)
    assert torch.allclose(u[0, 1], torch.full((12, 16), -2.0), atol=1e-5)


@pytest.mark.parametrize(
    "method, overrides",
    [("inr", {"iterations": 80, "points": 2048}), ("neural_ode", {"iterations": 25, "steps": 4})],
)
def test_a_short_fit_improves_a_sample_brain_pair_without_folding(method, overrides):
    pair = sample_pair("brain", dims=2, fixed=0, moving=1, resolution_mm=2.0)
    before = evaluate_identity(
        pair.fixed, pair.moving, fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels
    )["dice_mean"]
    result, metrics = run_pair(pair, method, overrides)
    assert metrics["dice_mean"] > before + 0.02, (before, metrics["dice_mean"])
    assert metrics["folding_percent"] == 0.0
    history = result.extras["loss_history"]
    assert len(history) == overrides["iterations"] and min(history[-5:]) < history[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["inr", "neural_ode"])
def test_defaults_improve_a_real_oasis_slice_pair(shared_data, method):
    from regcore.data.slices import slice_pairs

    pair = slice_pairs(shared_data / "brain3d", split="held_out", axes=(2,), per_axis=1)[0]
    before = evaluate_identity(
        pair.fixed, pair.moving, fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels
    )["dice_mean"]
    _, metrics = run_pair(pair, method)
    assert metrics["dice_mean"] > before + 0.1 and metrics["folding_percent"] == 0.0
