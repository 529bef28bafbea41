"""Regularisers: analytic zeros, MONAI cross-checks, folding, inverse consistency, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_random_field

from regcore.losses import Regularizer, inverse_consistency, make_regularizer
from regcore.losses.regularizers import (
    BendingEnergyRegularizer,
    DiffusionRegularizer,
    FoldingPenalty,
    inverse_consistency_residual,
)
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
    assert float(make_regularizer("bending")(lin)) == pytest.approx(0.0, abs=1e-20)
    assert float(make_regularizer("diffusion")(lin)) > 0
    const = linear_field(shape, np.zeros((n, n)), rng.normal(0, 2, n))
    for name in ("diffusion", "tv", "bending", "folding", "none"):
        assert float(make_regularizer(name)(const)) == pytest.approx(0.0, abs=1e-20), name


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
    assert float(make_regularizer("tv")(u)) == pytest.approx(expected_tv, rel=1e-12)


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")  # MONAI's own indexing
@pytest.mark.parametrize("shape", [(9, 11), (6, 7, 8)])
def test_bending_and_diffusion_gradients_match_monai_autograd(shape):
    """The hand-written adjoint (regcore.losses.stencils) against autograd through MONAI's losses, batch of 2."""
    from monai.losses import BendingEnergyLoss, DiffusionLoss

    u = torch.randn(2, len(shape), *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    pairs = [
        (BendingEnergyRegularizer(), BendingEnergyLoss(normalize=False)),
        (DiffusionRegularizer("central"), DiffusionLoss()),
    ]
    for ours, monai_loss in pairs:
        a, b = u.clone().requires_grad_(), u.clone().requires_grad_()
        ours(a).backward()
        monai_loss(b).backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    forward = u.clone().requires_grad_()
    (2.5 * DiffusionRegularizer()(forward)).backward()
    reference = u.clone().requires_grad_()
    (2.5 * sum((torch.diff(reference, dim=2 + a) ** 2).mean() for a in range(len(shape)))).backward()
    torch.testing.assert_close(forward.grad, reference.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["bending", "diffusion"])
def test_gradcheck_3d(name):
    u = (
        0.3 * torch.randn(1, 3, 4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ).requires_grad_()
    assert torch.autograd.gradcheck(make_regularizer(name), (u,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_diffusion_scales_quadratically_tv_linearly():
    u = smooth_random_field((16, 16), 1.0, seed=3).double()
    d, tv = make_regularizer("diffusion"), make_regularizer("tv")
    assert float(d(3 * u)) == pytest.approx(9 * float(d(u)))
    assert float(tv(3 * u)) == pytest.approx(3 * float(tv(u)))


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
    reg = make_regularizer(name)
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
        make_regularizer("elastic")
    with pytest.raises(ValueError, match=r"\(B, ndim, \*S\)"):
        make_regularizer("diffusion")(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        make_regularizer("tv")(torch.zeros(1, 2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="spatial size >= 3"):
        make_regularizer("bending")(torch.zeros(1, 2, 2, 8))
    with pytest.raises(ValueError, match="scheme"):
        DiffusionRegularizer("backward")
    with pytest.raises(ValueError, match="share shape"):
        inverse_consistency(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))
