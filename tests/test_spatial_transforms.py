"""regcore.spatial affine / svf / bspline / compose / smooth / resize: analytic cases and
library cross-checks (scipy, SimpleITK)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import smooth_random_field
from scipy.interpolate import BSpline
from scipy.ndimage import gaussian_filter, zoom

from regcore.spatial import affine as aff
from regcore.spatial import smooth_kernels, warp_kernels
from regcore.spatial.bspline import bspline_to_displacement, control_grid_shape
from regcore.spatial.compose import compose, inverse_consistency_error, invert
from regcore.spatial.jacobian import jacobian_determinant
from regcore.spatial.resize import pyramid, resize_field, resize_image
from regcore.spatial.smooth import gaussian_kernel_1d, gaussian_smooth, kernel_radius
from regcore.spatial.svf import integrate_svf, squaring_steps
from regcore.spatial.warp import warp


# -- affine ---------------------------------------------------------------------------------
def test_rigid_90_degrees_about_centre_2d():
    shape = (9, 9)
    a = aff.rigid_matrix(torch.tensor([[math.pi / 2]]), torch.zeros(1, 2), shape)
    # phi(x) = R (x - c) + c with R = [[0, -1], [1, 0]], c = (4, 4): phi(0, 0) = (8, 0)
    u = aff.affine_to_displacement(a, shape)
    assert torch.allclose(u[0, :, 0, 0], torch.tensor([8.0, 0.0]), atol=1e-5)
    x = torch.rand(1, 1, *shape)
    i, j = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    expected = x[0, 0][8 - j, i]  # warped[i, j] = moving[phi(i, j)] = moving[8 - j, i]
    assert torch.allclose(warp(x, u)[0, 0], expected, atol=1e-5)


def test_translation_field_is_constant():
    a = torch.tensor([[[1.0, 0, 0, 2.5], [0, 1, 0, -1.0], [0, 0, 1, 0.25]]])
    u = aff.affine_to_displacement(a, (4, 5, 6))
    assert torch.allclose(u, torch.tensor([2.5, -1.0, 0.25]).view(1, 3, 1, 1, 1).expand(1, 3, 4, 5, 6))


@pytest.mark.parametrize("n", [2, 3])
def test_parameter_round_trips(n):
    g = torch.Generator().manual_seed(0)
    shape = (10, 12, 14)[:n]
    angles = 0.4 * torch.randn(2, 1 if n == 2 else 3, generator=g)
    trans = torch.randn(2, n, generator=g)
    rigid = aff.rigid_matrix(angles, trans, shape)
    rot = rigid[:, :, :n]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(n).expand(2, n, n), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(2), atol=1e-5)
    a_back, t_back = aff.matrix_to_rigid_params(rigid, shape)
    assert torch.allclose(a_back, angles, atol=1e-5) and torch.allclose(t_back, trans, atol=1e-4)
    params = 0.1 * torch.randn(2, n, n + 1, generator=g)
    assert torch.allclose(
        aff.matrix_to_affine_params(aff.affine_params_to_matrix(params, shape), shape), params, atol=1e-5
    )
    sim = aff.similarity_matrix(angles, trans, torch.full((2, 1), math.log(1.5)), shape)
    assert torch.allclose(torch.linalg.det(sim[:, :, :n]), torch.full((2,), 1.5**n), atol=1e-4)
    centre = aff.image_centre(shape)
    assert torch.allclose(
        torch.einsum("bij,j->bi", sim[:, :, :n], centre) + sim[:, :, n], centre + trans, atol=1e-4
    )


def test_compose_and_invert_affine():
    g = torch.Generator().manual_seed(2)
    a = torch.cat([torch.eye(3) + 0.1 * torch.randn(3, 3, generator=g), torch.randn(3, 1, generator=g)], 1)[
        None
    ]
    ident = aff.compose_affine(a, aff.invert_affine(a))
    assert torch.allclose(ident, torch.cat([torch.eye(3), torch.zeros(3, 1)], 1)[None], atol=1e-5)


def test_affine_params_are_differentiable():
    angles = torch.zeros(1, 3, requires_grad=True)
    u = aff.affine_to_displacement(aff.rigid_matrix(angles, torch.zeros(1, 3), (5, 6, 7)), (5, 6, 7))
    u.square().sum().backward()
    assert angles.grad is not None and torch.isfinite(angles.grad).all()


@pytest.mark.parametrize("principal_axes", [False, True])
def test_moments_init_recovers_known_rigid(principal_axes):
    shape = (48, 48)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    fixed = (((yy - 20) / 12) ** 2 + ((xx - 22) / 5) ** 2 < 1).float()[None, None]  # elongated ellipse
    truth = aff.rigid_matrix(torch.tensor([[0.5]]), torch.tensor([[3.0, -2.0]]), shape)
    # moving o phi = fixed when moving = fixed o phi^-1
    moving = warp(fixed, aff.affine_to_displacement(aff.invert_affine(truth), shape))
    est = aff.moments_init(fixed, moving, principal_axes=principal_axes)
    if principal_axes:
        assert torch.allclose(est, truth, atol=0.15)
    else:
        centre = torch.tensor([20.0, 22.0])
        moved = est[0, :, :2] @ centre + est[0, :, 2]
        assert torch.allclose(moved, truth[0, :, :2] @ centre + truth[0, :, 2], atol=0.2)


def test_affine_bad_input():
    with pytest.raises(ValueError, match=r"\(B, n, n\+1\)"):
        aff.affine_to_displacement(torch.zeros(1, 3, 3), (4, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        aff.affine_to_displacement(torch.zeros(1, 2, 3), (4, 4, 4))
    with pytest.raises(ValueError, match="angles"):
        aff.rotation_matrix(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="share batch and grid"):
        aff.moments_init(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))


# -- svf ------------------------------------------------------------------------------------
def test_constant_velocity_integrates_to_translation():
    v = torch.zeros(1, 3, 12, 12, 12)
    v[:, 0], v[:, 2] = 2.0, -1.5
    assert torch.allclose(integrate_svf(v), v, atol=1e-5)


def test_exp_v_composed_with_exp_minus_v_is_identity():
    shape = (40, 40)
    v = smooth_random_field(shape, 4.0, seed=3, sigma=6.0)
    fwd, bwd = integrate_svf(v), integrate_svf(-v)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert compose(fwd, bwd)[inner].abs().max() < 0.05
    assert compose(bwd, fwd)[inner].abs().max() < 0.05


def test_large_smooth_velocity_gives_positive_jacobian():
    v = smooth_random_field((32, 32, 32), 8.0, seed=4, sigma=5.0)  # the plain field v itself folds
    assert (jacobian_determinant(v) <= 0).any()
    assert jacobian_determinant(integrate_svf(v, steps=7)).min() > 0


def test_svf_matches_monai_dvf2ddf():
    from monai.networks.blocks import DVF2DDF

    v = smooth_random_field((48, 48), 10.0, seed=5, sigma=4.0)
    ref = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="border")(v)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert torch.allclose(integrate_svf(v, 7)[inner], ref[inner], atol=0.05)


@pytest.mark.skipif(not warp_kernels.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("shape", [(2, 2, 30, 34), (1, 3, 14, 15, 16)])
def test_svf_compiled_and_autograd_backends_agree(shape):
    """CPU without autograd runs the fused numba compose; with autograd, grid_sample: same field."""
    v = torch.cat([smooth_random_field(shape[2:], 3.0, seed=k, sigma=3.0) for k in range(shape[0])])
    fast = integrate_svf(v, 6)
    slow = integrate_svf(v.clone().requires_grad_(), 6)
    assert slow.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach(), atol=1e-5, rtol=0)
    slow.sum().backward()  # the autograd backend is differentiable


def test_svf_adaptive_steps():
    assert squaring_steps(0.4) == 0 and squaring_steps(0.5) == 0 and squaring_steps(0.6) == 1
    assert squaring_steps(8.0) == 4 and squaring_steps(1e9) == 10
    v = torch.zeros(1, 2, 20, 20)
    v[:, 0] = 3.0
    torch.testing.assert_close(integrate_svf(v, steps=None), v, atol=1e-5, rtol=0)
    torch.testing.assert_close(compose(v, v), 2 * v, atol=1e-5, rtol=0)  # translations add


def test_svf_bad_input():
    with pytest.raises(ValueError, match="steps"):
        integrate_svf(torch.zeros(1, 2, 4, 4), steps=-1)
    with pytest.raises(ValueError, match="steps"):
        integrate_svf(torch.zeros(1, 2, 4, 4), steps=2.0)
    with pytest.raises(ValueError, match="velocity must be"):
        integrate_svf(torch.zeros(1, 3, 4, 4))


# -- bspline --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,spacing", [((20, 17), 4), ((9, 10, 11), (3, 2.5, 5))])
def test_bspline_partition_of_unity(shape, spacing):
    n = len(shape)
    grid = control_grid_shape(shape, spacing)
    coeffs = torch.tensor([1.5, -2.0, 0.5][:n]).view(1, n, *([1] * n)).expand(1, n, *grid).contiguous()
    u = bspline_to_displacement(coeffs, shape, spacing)
    assert torch.allclose(u, coeffs[:, :, *([slice(0, 1)] * n)].expand(1, n, *shape), atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_bspline_under_the_injectivity_bound_never_folds_and_over_it_can(ndim):
    """Choi & Lee's bound: coefficients of +-bound x spacing (the extreme case, random signs) keep det J > 0; at
    twice the bound the same random fields fold (the bound is what keeps them from it)."""
    from regcore.metrics.deformation import jacobian_determinant_map
    from regcore.spatial.bspline import INJECTIVE_FRACTION

    shape, spacing = ((48, 40), 5) if ndim == 2 else ((30, 28, 26), 5)
    rng = torch.Generator().manual_seed(ndim)
    lowest = {}
    for scale in (1.0, 2.0):
        worst = float("inf")
        for _ in range(12):
            signs = torch.randint(0, 2, (1, ndim, *control_grid_shape(shape, spacing)), generator=rng) * 2 - 1
            c = signs.double() * INJECTIVE_FRACTION[ndim] * spacing * scale
            worst = min(
                worst, float(jacobian_determinant_map(bspline_to_displacement(c, shape, spacing)).min())
            )
        lowest[scale] = worst
    assert lowest[1.0] > 0.0
    assert lowest[2.0] < 0.0


def test_bspline_matches_scipy_1d_and_2d():
    g = np.random.default_rng(0)
    shape, spacing = (23, 19), (5, 3.5)
    grid = control_grid_shape(shape, spacing)
    c = g.standard_normal((2, *grid))
    ours = bspline_to_displacement(torch.tensor(c)[None], shape, spacing)[0].numpy()
    mats = []
    for size, n_ctrl, s in zip(shape, grid, spacing):
        knots = (np.arange(n_ctrl + 4) - 3.0) * s
        mats.append(BSpline.design_matrix(np.arange(size, dtype=float), knots, 3).toarray())
        coef = g.standard_normal(n_ctrl)  # 1D: scipy's BSpline evaluates the same curve
        ref = BSpline(knots, coef, 3)(np.arange(size, dtype=float))
        ctrl_1d = torch.tensor(coef)[None, None, :, None].expand(
            1, 2, n_ctrl, control_grid_shape((size, 2), (s, 1))[1]
        )
        one = bspline_to_displacement(ctrl_1d.contiguous(), (size, 2), (s, 1))
        assert np.abs(one[0, 0, :, 0].numpy() - ref).max() < 1e-10
    ref2 = np.einsum("xi,cij,yj->cxy", mats[0], c, mats[1])
    assert np.abs(ours - ref2).max() < 1e-10


def test_bspline_bad_input():
    with pytest.raises(ValueError, match="coeffs must be"):
        bspline_to_displacement(torch.zeros(1, 2, 5, 5), (20, 20), 4)
    with pytest.raises(ValueError, match="spacing_vox"):
        control_grid_shape((20, 20), 0)


# -- compose / invert ----------------------------------------------------------------------
def test_compose_definition_matches_sequential_warps():
    shape = (36, 40)
    a = smooth_random_field(shape, 3.0, seed=5, sigma=5.0)
    b = smooth_random_field(shape, 3.0, seed=6, sigma=5.0)
    i, j = torch.meshgrid(torch.arange(36.0), torch.arange(40.0), indexing="ij")
    x = (0.3 * i + 0.7 * j)[None, None]  # linear image: linear interpolation adds no error of its own
    two_steps = warp(warp(x, a), b)  # m o phi_a o phi_b
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert (warp(x, compose(a, b)) - two_steps)[inner].abs().max() < 1e-4
    assert (warp(x, compose(b, a)) - two_steps)[inner].abs().max() > 0.1  # the order matters
    t1, t2 = torch.full((1, 2, *shape), 1.0), torch.full((1, 2, *shape), 2.0)
    assert torch.allclose(compose(t1, t2), t1 + t2)


def test_invert_is_inverse_consistent():
    u = smooth_random_field((30, 32, 28), 3.0, seed=7, sigma=5.0)
    v = invert(u, iterations=40)
    inner = (slice(None), slice(5, -5), slice(5, -5), slice(5, -5))
    assert inverse_consistency_error(u, v)[inner].max() < 0.02
    assert inverse_consistency_error(v, u)[inner].max() < 0.05


def test_invert_matches_simpleitk_inverse_filter():
    shape = (40, 44)
    u = smooth_random_field(shape, 3.0, seed=8, sigma=6.0).double()
    field = sitk.GetImageFromArray(u[0].flip(0).permute(1, 2, 0).numpy(), isVector=True)  # xyz components
    filt = sitk.InvertDisplacementFieldImageFilter()
    filt.SetMaximumNumberOfIterations(50)
    filt.SetMeanErrorToleranceThreshold(1e-5)
    filt.SetMaxErrorToleranceThreshold(1e-4)
    filt.EnforceBoundaryConditionOn()
    ref = torch.from_numpy(sitk.GetArrayFromImage(filt.Execute(field))).permute(2, 0, 1).flip(0)[None]
    ours = invert(u, iterations=50, tolerance=1e-6)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert (ours - ref)[inner].abs().max() < 0.02


def test_compose_bad_input():
    with pytest.raises(ValueError, match="must share"):
        compose(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match="iterations"):
        invert(torch.zeros(1, 2, 4, 4), iterations=0)


# -- smooth ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [1.0, (0.5, 2.0, 0.0), 3.0])
def test_gaussian_smooth_matches_scipy_nearest(sigma):
    x = torch.rand(2, 2, 14, 15, 16, dtype=torch.float64)
    sig = sigma if isinstance(sigma, tuple) else (sigma,) * 3
    ref = np.stack(
        [[gaussian_filter(x[b, c].numpy(), sig, mode="nearest") for c in range(2)] for b in range(2)]
    )
    assert np.abs(gaussian_smooth(x, sigma).numpy() - ref).max() < 1e-12


@pytest.mark.parametrize("sigma", [0.5, 0.75, 1.0, 2.0])
def test_gaussian_smooth_truncated_at_two_sigma_matches_scipy(sigma):
    """The classical methods' kernel (truncate=2), incl. axes shorter than the kernel radius."""
    x = torch.rand(1, 2, 17, 3, 21, dtype=torch.float64)
    ref = np.stack([gaussian_filter(x[0, c].numpy(), sigma, mode="nearest", truncate=2.0) for c in range(2)])
    np.testing.assert_allclose(gaussian_smooth(x, sigma, truncate=2.0)[0].numpy(), ref, atol=1e-12)


@pytest.mark.skipif(not smooth_kernels.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize(
    "shape,sigma",
    [
        ((2, 3, 20, 23, 9), 0.75),
        ((1, 2, 31, 5), (2.0, 0.5)),
        ((1, 1, 12, 13, 14), 3.0),
        ((1, 2, 6, 7, 3), 1.5),  # rows shorter than the kernel: X border voxels clamp on both sides
        ((1, 1, 9, 1), 1.0),
    ],
)
def test_gaussian_smooth_compiled_backend_matches_torch_backend_and_scipy(shape, sigma):
    """CPU float32 without autograd runs the numba kernels; with autograd the torch adds: same values."""
    x = torch.rand(*shape)
    fast = gaussian_smooth(x, sigma, truncate=2.0)
    slow = gaussian_smooth(x.clone().requires_grad_(), sigma, truncate=2.0)
    assert slow.requires_grad and not fast.requires_grad and fast.shape == x.shape
    torch.testing.assert_close(fast, slow.detach(), atol=2e-6, rtol=0)
    sig = sigma if isinstance(sigma, tuple) else (sigma,) * (len(shape) - 2)
    ref = gaussian_filter(x[0, 0].double().numpy(), sig, mode="nearest", truncate=2.0)
    np.testing.assert_allclose(fast[0, 0].numpy(), ref, atol=2e-6)
    assert torch.equal(x, x.clone())  # input untouched


def test_gaussian_kernel_weights():
    assert kernel_radius(1.2, 2.0) == 2 and kernel_radius(0.75, 2.0) == 2 and kernel_radius(1.0, 4.0) == 4
    k = gaussian_kernel_1d(1.5, truncate=2.0, dtype=torch.float64)
    assert k.numel() == 7 and float(k.sum()) == pytest.approx(1.0) and torch.equal(k, k.flip(0))
    raw = gaussian_kernel_1d(2.0, radius=4, normalise=False, dtype=torch.float64)
    torch.testing.assert_close(
        raw, torch.exp(-0.5 * (torch.arange(-4.0, 5.0, dtype=torch.float64) / 2.0) ** 2)
    )
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel_1d(0.0)
    with pytest.raises(ValueError, match="radius"):
        gaussian_kernel_1d(1.0, radius=-1)


def test_gaussian_smooth_2d_keeps_constants_and_is_differentiable():
    x = torch.full((1, 1, 12, 13), 3.0, requires_grad=True)
    y = gaussian_smooth(x, 2.0)
    assert torch.allclose(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad.sum(), torch.tensor(float(x.numel())))


def test_gaussian_smooth_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth(torch.rand(1, 1, 5, 5), -1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth(torch.rand(1, 1, 5, 5), (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="float"):
        gaussian_smooth(torch.ones(1, 1, 5, 5, dtype=torch.int64), 1.0)
    with pytest.raises(ValueError, match="truncate"):
        gaussian_smooth(torch.rand(1, 1, 5, 5), 1.0, truncate=0)


# -- resize ---------------------------------------------------------------------------------
def test_resize_linear_matches_scipy_zoom_align_corners():
    x = torch.rand(1, 1, 13, 17, dtype=torch.float64)
    out = resize_image(x, size=(25, 9), antialias=False)
    ref = zoom(x[0, 0].numpy(), (25 / 13, 9 / 17), order=1, mode="nearest", grid_mode=False)
    assert ref.shape == (25, 9) and np.abs(out[0, 0].numpy() - ref).max() < 1e-10


def test_resize_field_keeps_an_affine_transform():
    """The same physical affine, sampled on a coarser grid, in the coarse grid's voxels."""
    a = torch.tensor([[[1.05, 0.1, 0.0, 1.0], [-0.05, 0.95, 0.0, -2.0], [0.0, 0.02, 1.0, 0.5]]])
    fine, coarse = (33, 25, 17), (17, 13, 9)
    u_fine = aff.affine_to_displacement(a, fine)
    s = torch.tensor([(c - 1) / (f - 1) for f, c in zip(fine, coarse)])
    a_coarse = torch.cat([s[:, None] * a[0, :, :3] / s[None, :], (s * a[0, :, 3])[:, None]], 1)[None]
    assert torch.allclose(
        resize_field(u_fine, coarse), aff.affine_to_displacement(a_coarse, coarse), atol=1e-4
    )


def test_resize_nearest_labels_and_pyramid():
    labels = torch.randint(0, 4, (1, 1, 16, 20, 12), dtype=torch.int16)
    small = resize_image(labels, scale=0.5, mode="nearest")
    assert small.dtype == torch.int16 and small.shape[2:] == (8, 10, 6)
    assert set(small.unique().tolist()) <= set(labels.unique().tolist())
    levels = pyramid(torch.rand(1, 1, 32, 24), levels=3)
    assert [tuple(t.shape[2:]) for t in levels] == [(8, 6), (16, 12), (32, 24)]


def test_resize_antialias_reduces_aliasing():
    x = torch.zeros(1, 1, 64, 64)
    x[..., ::2] = 1.0  # Nyquist stripes: plain sampling aliases them
    plain = resize_image(x, size=(32, 22), antialias=False)
    smooth = resize_image(x, size=(32, 22), antialias=True)
    assert smooth.std() < 0.5 * plain.std()


def test_resize_bad_input():
    with pytest.raises(ValueError, match="exactly one of size and scale"):
        resize_image(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        resize_image(torch.rand(1, 1, 4, 4), scale=2, mode="cubic")
    with pytest.raises(TypeError, match="nearest"):
        resize_image(torch.ones(1, 1, 4, 4, dtype=torch.int64), scale=2)
