"""regcore.spatial.jacobian (the one Jacobian of regcore): analytic fields, folding, SimpleITK cross-checks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import smooth_random_field

from regcore.spatial.affine import affine_to_displacement
from regcore.spatial.jacobian import jacobian_determinant, jacobian_matrix, small_det


@pytest.mark.parametrize("shape", [(10, 12), (6, 7, 8)])
def test_zero_field_has_det_one(shape):
    u = torch.zeros(2, len(shape), *shape)
    assert torch.equal(jacobian_determinant(u), torch.ones(2, *shape))
    assert torch.equal(jacobian_matrix(u)[(0,) + (1,) * len(shape)], torch.eye(len(shape)))


@pytest.mark.parametrize("n", [2, 3])
def test_small_det_matches_torch_linalg(n):
    m = torch.randn(5, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    ours = small_det([[m[:, r, c] for c in range(n)] for r in range(n)])
    torch.testing.assert_close(ours, torch.linalg.det(m))


@pytest.mark.parametrize("n", [2, 3])
def test_affine_field_has_constant_det_equal_to_det_a(n):
    g = torch.Generator().manual_seed(n)
    a = torch.eye(n) + 0.2 * torch.randn(n, n, generator=g, dtype=torch.float64)
    matrix = torch.cat([a, torch.randn(n, 1, generator=g, dtype=torch.float64)], 1)[None]
    shape = (7, 8, 9)[:n]
    det = jacobian_determinant(affine_to_displacement(matrix, shape))
    assert det.shape == (1, *shape)
    assert torch.allclose(det, torch.linalg.det(a).expand_as(det), atol=1e-10)
    assert torch.allclose(jacobian_matrix(affine_to_displacement(matrix, shape))[0, 3, 4], a, atol=1e-10)


def test_folding_field_has_negative_det():
    u = torch.zeros(1, 2, 10, 10)
    u[:, 0] = -2.0 * torch.arange(10.0).view(10, 1)  # phi_0(x) = -x_0: a mirror
    assert torch.allclose(jacobian_determinant(u), torch.full((1, 10, 10), -1.0))


def test_matches_simpleitk_with_anisotropic_spacing():
    """Our voxel field -> mm vectors on a grid with spacing: SimpleITK's determinant agrees."""
    shape, spacing = (20, 22, 18), (1.5, 0.8, 2.0)  # per tensor axis
    u = smooth_random_field(shape, 2.0, seed=2, sigma=3.0).double()
    mm = u[0] * torch.tensor(spacing, dtype=torch.float64).view(3, 1, 1, 1)
    field = sitk.GetImageFromArray(mm.flip(0).permute(1, 2, 3, 0).numpy(), isVector=True)
    field.SetSpacing(spacing[::-1])
    filt = sitk.DisplacementFieldJacobianDeterminantFilter()
    filt.SetUseImageSpacing(True)
    ref = sitk.GetArrayFromImage(filt.Execute(field))
    ours = jacobian_determinant(u)[0].numpy()
    inner = (slice(1, -1),) * 3
    assert np.abs(ours[inner] - ref[inner]).max() < 1e-6
    assert ours.min() < 0.99 < 1.01 < ours.max()  # a non-trivial field


def test_matches_simpleitk_default_filter_in_3d():
    """Unit spacing, SimpleITK's vector components in (x, y, z) = our tensor axes reversed."""
    u = smooth_random_field((12, 14, 16), 2.0, seed=3).double()
    field = sitk.GetImageFromArray(u[0].flip(0).permute(1, 2, 3, 0).numpy(), isVector=True)
    ref = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    ours = jacobian_determinant(u)[0].numpy()
    inner = (slice(1, -1),) * 3  # boundary differences differ (one-sided vs. central)
    assert np.abs(ours[inner] - ref[inner]).max() < 1e-6


def test_differentiable():
    u = (0.1 * torch.randn(1, 3, 4, 3, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(jacobian_determinant, (u,))


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(B, ndim, \*S\)"):
        jacobian_determinant(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=">= 2"):
        jacobian_determinant(torch.zeros(1, 2, 1, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        jacobian_determinant(np.zeros((1, 2, 4, 4)))
