"""Regularisers: analytic zeros, MONAI cross-checks, folding, inverse consistency, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regcore.losses import Regularizer, inverse_consistency, regularizer_loss
from regcore.losses.regularizers import (
    BendingEnergyRegularizer,
    DiffusionRegularizer,
    FoldingPenalty,
    _fallback_jacobian_determinant,
    inverse_consistency_residual,
    jacobian_determinant,
)
from conftest import smooth_random_field
from regcore.spatial.warp import warp


def linear_field(shape, matrix, shift, dtype=torch.float64) -> torch.Tensor:
    """u(x) = A x + t on the voxel grid: (1, n, *shape)."""
    n = len(shape)
    axes = [torch.arange(s, dtype=dtype) for s in shape]
    x = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (n, *S)
    a = torch.as_tensor(matrix, dtype=dtype)
    u = torch.einsum("ij,j...->i...", a, x) + torch.as_tensor(shift, dtype=dtype).view(n, *([1] * n))
    return u[None]


@pytest.mark.parametrize("shape", [(12, 14), (8, 9, 10)])
def test_linear_field_has_zero_bending_and_constant_field_zero_everything(shape):
    n = len(shape)
    rng = np.random.default_rng(0)
    lin = linear_field(shape, rng.normal(0, 0.1, (n, n)), rng.normal(0, 2, n))
    assert float(regularizer_loss("bending")(lin)) == pytest.approx(0.0, abs=1e-20)
    assert float(regularizer_loss("diffusion")(lin)) > 0
    const = linear_field(shape, np.zeros((n, n)), rng.normal(0, 2, n))
    for name in ("diffusion", "tv", "bending", "folding", "none"):
        assert float(regularizer_loss(name)(const)) == pytest.approx(0.0, abs=1e-20), name


@pytest.mark.parametrize("shape", [(12, 14), (8, 9, 10)])
def test_bending_matches_monai(shape):
    from monai.losses import BendingEnergyLoss

    u = smooth_random_field(shape, 2.0, seed=1, sigma=1.5)
    ref = float(BendingEnergyLoss(normalize=False)(u))
    assert float(BendingEnergyRegularizer()(u)) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("shape", [(12, 14), (8, 9, 10)])
def test_diffusion_central_matches_monai_and_forward_matches_numpy(shape):
    from monai.losses import DiffusionLoss

    u = smooth_random_field(shape, 2.0, seed=2, sigma=1.5).double()
    assert float(DiffusionRegularizer("central")(u)) == pytest.approx(float(DiffusionLoss()(u)), rel=1e-10)
    arr = u.numpy()
    expected = sum(np.mean(np.diff(arr, axis=2 + a) ** 2) for a in range(len(shape)))
    assert float(DiffusionRegularizer()(u)) == pytest.approx(expected, rel=1e-12)
    expected_tv = sum(np.mean(np.abs(np.diff(arr, axis=2 + a))) for a in range(len(shape)))
    assert float(regularizer_loss("tv")(u)) == pytest.approx(expected_tv, rel=1e-12)


def test_diffusion_scales_quadratically_tv_linearly():
    u = smooth_random_field((16, 16), 1.0, seed=3).double()
    d, tv = regularizer_loss("diffusion"), regularizer_loss("tv")
    assert float(d(3 * u)) == pytest.approx(9 * float(d(u)))
    assert float(tv(3 * u)) == pytest.approx(3 * float(tv(u)))


@pytest.mark.parametrize("shape", [(10, 11), (7, 8, 9)])
def test_jacobian_of_affine_field_is_det_of_i_plus_a(shape):
    n = len(shape)
    a = np.random.default_rng(4).normal(0, 0.2, (n, n))
    u = linear_field(shape, a, np.zeros(n))
    expected = np.linalg.det(np.eye(n) + a)
    torch.testing.assert_close(_fallback_jacobian_determinant(u), torch.full((1, *shape), expected, dtype=u.dtype))
    torch.testing.assert_close(jacobian_determinant(u), torch.full((1, *shape), expected, dtype=u.dtype))


def test_folding_penalty_counts_only_folds():
    shape = (10, 12)
    flip = linear_field(shape, [[-2.0, 0.0], [0.0, 0.0]], [0.0, 0.0])  # phi_0 = -x_0: det J = -1 everywhere
    assert float(FoldingPenalty()(flip)) == pytest.approx(1.0)
    squeeze = linear_field(shape, [[-0.5, 0.0], [0.0, 0.0]], [0.0, 0.0])  # det J = 0.5 > 0: not penalised
    assert float(FoldingPenalty()(squeeze)) == 0.0


def test_inverse_consistency_zero_for_true_inverse():
    shape = (16, 18)
    t = torch.zeros(1, 2, *shape, dtype=torch.float64)
    t[:, 0], t[:, 1] = 1.5, -0.75  # translation and its inverse compose exactly (border padding)
    assert float(inverse_consistency(t, -t)) == pytest.approx(0.0, abs=1e-20)
    u = smooth_random_field(shape, 1.0, seed=5).double()
    inv = -u
    for _ in range(30):  # fixed-point inverse: v(x) = -u(x + v(x))
        inv = -warp(u, inv, padding_mode="border")
    assert float(inverse_consistency(u, inv)) < 1e-3 * float(inverse_consistency(u, u))
    assert inverse_consistency_residual(u, inv).shape == u.shape


@pytest.mark.parametrize("name", list(Regularizer))
def test_gradcheck(name):
    torch.manual_seed(0)
    u = (0.2 * torch.randn(1, 2, 5, 6, dtype=torch.float64)).requires_grad_()
    reg = regularizer_loss(name)
    assert torch.autograd.gradcheck(reg, (u,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradcheck_folding_active_and_inverse_consistency():
    torch.manual_seed(1)
    u = (1.5 * torch.randn(1, 2, 6, 6, dtype=torch.float64)).requires_grad_()
    assert float(FoldingPenalty()(u.detach())) > 0  # make sure the penalty is active
    assert torch.autograd.gradcheck(FoldingPenalty(), (u,), eps=1e-7, atol=1e-5, fast_mode=True)
    v = (0.3 * torch.randn(1, 2, 6, 6, dtype=torch.float64)).requires_grad_()
    w = (0.3 * torch.randn(1, 2, 6, 6, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(inverse_consistency, (v, w), eps=1e-6, atol=1e-5, fast_mode=True)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="must be one of"):
        regularizer_loss("elastic")
    with pytest.raises(ValueError, match=r"\(B, ndim, \*S\)"):
        regularizer_loss("diffusion")(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        regularizer_loss("tv")(torch.zeros(1, 2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="spatial size >= 3"):
        regularizer_loss("bending")(torch.zeros(1, 2, 2, 8))
    with pytest.raises(ValueError, match="scheme"):
        DiffusionRegularizer("backward")
    with pytest.raises(ValueError, match="share shape"):
        inverse_consistency(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))


def test_private_fallbacks_agree_with_spatial_modules():
    """The fallbacks used before regcore.spatial.{jacobian,compose} existed give the same numbers."""
    spatial_jacobian = pytest.importorskip("regcore.spatial.jacobian")
    spatial_compose = pytest.importorskip("regcore.spatial.compose")
    u = smooth_random_field((12, 13, 14), 2.0, seed=6, sigma=2.0).double()
    v = smooth_random_field((12, 13, 14), 1.0, seed=7, sigma=2.0).double()
    torch.testing.assert_close(_fallback_jacobian_determinant(u), spatial_jacobian.jacobian_determinant(u))
    torch.testing.assert_close(inverse_consistency_residual(u, v), u + warp(v, u, padding_mode="border"))
    torch.testing.assert_close(inverse_consistency_residual(u, v), spatial_compose.compose(v, u))
