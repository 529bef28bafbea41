"""The fused numba kernels of the greedy (FireANTs-style) optimiser against the torch code they replace."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from regcore.methods.classical import fireants, greedy_kernels, pyramid
from regcore.methods.classical.filters import image_gradient
from regcore.methods.classical.lncc import lncc_and_gradient
from regcore.spatial.warp import warp

pytestmark = pytest.mark.skipif(not greedy_kernels.AVAILABLE, reason="numba is not installed")

SHAPES = [(20, 23, 27), (31, 37)]


def _smooth_image(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, *[max(2, s // 4) for s in shape], generator=g)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=True).contiguous()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", [3, 5, 7])
def test_lncc_force_matches_analytic_torch_gradient(shape, window):
    """Against the float64 torch gradient: as accurate as the float32 torch code it replaces (within 2x)
    (smooth images have near-constant windows where float32 variances cancel)."""
    fixed, warped = _smooth_image(shape, 0), _smooth_image(shape, 1)
    ws = greedy_kernels.GreedyWorkspace(shape)
    force = np.empty((len(shape), *shape), np.float32)
    loss = ws.lncc_force(fixed[0].numpy(), warped[0].numpy(), window, force)

    def torch_force(dtype):
        f, w = fixed.to(dtype), warped.to(dtype)
        value, d_warped = lncc_and_gradient(f, w, window)
        return float(value), (d_warped * image_gradient(w))[0].double().numpy()

    exact_loss, exact = torch_force(torch.float64)
    _, float32_torch = torch_force(torch.float32)
    assert loss == pytest.approx(exact_loss, rel=1e-5)
    ours_error = np.abs(force - exact).max()
    assert ours_error <= 2 * max(np.abs(float32_torch - exact).max(), 1e-6 * np.abs(exact).max())


@pytest.mark.parametrize("shape", [(20, 23, 27), (1, 31, 37), (3, 2, 5), (41, 3, 4)])
@pytest.mark.parametrize("r", [1, 3, 6])
def test_running_box_sums_match_direct_sums(shape, r):
    """box_kernels' running sums along x, y and z (and the fused x sums of I, J, I^2, J^2, IJ) against scipy's
    direct box sums with zero padding, including windows wider than the axis (r = 6 on 2 or 3 voxels) and z cut
    into up to 4 runs of uneven length (41 planes)."""
    from scipy.ndimage import uniform_filter1d

    from regcore.methods.classical import box_kernels

    rng = np.random.default_rng(r)
    src = rng.random((2, *shape), dtype=np.float32)
    fixed, warped = src[0], src[1]

    def direct(a: np.ndarray, axis: int) -> np.ndarray:
        return uniform_filter1d(a.astype(np.float64), 2 * r + 1, axis=axis, mode="constant") * (2 * r + 1)

    out = np.empty_like(src)
    for kernel, axis in ((box_kernels.box_y, 2), (box_kernels.box_z, 1)):
        kernel(src, out, r)
        np.testing.assert_allclose(out, direct(src, axis), rtol=1e-5, atol=1e-5)
    box_kernels.box_x(src, out, 2, r)
    np.testing.assert_allclose(out, direct(src, 3), rtol=1e-5, atol=1e-5)
    terms = np.empty((5, *shape), np.float32)
    box_kernels.box_x_of_lncc_terms(fixed, warped, terms, r)
    for got, product in zip(
        terms, (fixed, warped, fixed * fixed, warped * warped, fixed * warped), strict=True
    ):
        np.testing.assert_allclose(got, direct(product, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigma", [0.5, 0.75, 2.0])
def test_smooth_matches_scipy_truncated_at_two_sigma(shape, sigma):
    """In place on the workspace buffers, the 2-sigma Gaussian of regcore.spatial.smooth (scipy's definition)."""
    field = torch.randn(1, len(shape), *shape)
    ours, lent = field[0].numpy().copy(), field[0].numpy().copy()
    workspace = greedy_kernels.GreedyWorkspace(shape)
    workspace.smooth(ours, sigma)
    ref = np.stack(
        [gaussian_filter(c.astype(np.float64), sigma, mode="nearest", truncate=2.0) for c in field[0].numpy()]
    )
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    workspace.smooth(lent, sigma, scratch=np.full_like(lent, np.nan))  # a lent buffer: same result
    np.testing.assert_array_equal(lent, ours)
    with pytest.raises(ValueError, match="separate float32"):
        workspace.smooth(lent, sigma, scratch=lent)


@pytest.mark.parametrize("shape, sigmas", [((10, 12, 9), (1.0, 0.0, 0.4)), ((20, 18), (0.0, 1.5))])
def test_smooth_takes_one_sigma_per_axis_as_scipy(shape, sigmas):
    """Per-axis sigmas (0 skips an axis): scipy's per-axis Gaussian; a wrong count is refused."""
    field = torch.randn(1, len(shape), *shape)
    ours = field[0].numpy().copy()
    workspace = greedy_kernels.GreedyWorkspace(shape)
    workspace.smooth(ours, sigmas)
    ref = np.stack(
        [
            gaussian_filter(c.astype(np.float64), sigmas, mode="nearest", truncate=2.0)
            for c in field[0].numpy()
        ]
    )
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    with pytest.raises(ValueError, match="one per axis"):
        workspace.smooth(ours, (1.0,) * (len(shape) + 1))


def test_level_sigmas_keep_the_width_in_mm_on_thick_slice_axes():
    """Sigma is in voxels of the level's finest axis: isotropic grids keep it on every axis; a 1 x 1 x 5 mm
    grid smooths 5x fewer voxels along the slices, and at factor 4 (slice axis not shrunk: 4 x 4 x 5 mm) 0.8x."""
    assert pyramid.level_sigmas(0.5, 2, 3) == (0.5, 0.5, 0.5)
    assert pyramid.level_sigmas(0.5, 2, 3, (1.0, 1.0, 1.0)) == (0.5, 0.5, 0.5)
    assert pyramid.level_sigmas(1.0, 1, 3, (1.0, 1.0, 5.0)) == pytest.approx((1.0, 1.0, 0.2))
    assert pyramid.level_sigmas(1.0, 4, 3, (1.0, 1.0, 5.0)) == pytest.approx((1.0, 1.0, 0.8))


@pytest.mark.parametrize("shape", SHAPES)
def test_adam_step_and_compose_match_torch(shape):
    ndim = len(shape)
    ws = greedy_kernels.GreedyWorkspace(shape)
    adam = fireants._Adam(torch.zeros(1, ndim, *shape), 0.9, 0.99)
    m = np.zeros((ndim, *shape), np.float32)
    v = np.zeros_like(m)
    for t in range(1, 4):
        grad = torch.randn(1, ndim, *shape) * 10 ** (t - 2)
        d = adam.direction(grad)
        expected = d * (-0.7 / d.norm(dim=1).amax().clamp_min(1.0))
        step = grad[0].numpy().copy()
        ws.adam_step(step, m, v, t, 0.9, 0.99, 0.7)
        np.testing.assert_allclose(step, expected[0].numpy(), atol=1e-6)
    assert np.linalg.norm(step, axis=0).max() <= 0.7 + 1e-6

    u = torch.randn(1, ndim, *shape) * 2
    out = np.empty_like(step)
    ws.compose(u[0].numpy(), step, out)
    s = torch.from_numpy(step)[None]
    np.testing.assert_allclose(out, (s + warp(u, s, slabs=1))[0].numpy(), atol=5e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradient_step_moves_the_strongest_voxel_step_size_against_the_gradient(shape):
    ndim = len(shape)
    grad = torch.randn(ndim, *shape) * 3
    step = grad.numpy().copy()
    greedy_kernels.GreedyWorkspace(shape).gradient_step(step, 0.7)
    expected = -0.7 * grad / grad.norm(dim=0).amax()  # ANTs SyN: proportional to the force, largest = step
    np.testing.assert_allclose(step, expected.numpy(), atol=1e-6)
    assert np.linalg.norm(step, axis=0).max() == pytest.approx(0.7, abs=1e-6)
    direction = fireants._GradientStep().direction(grad[None])
    np.testing.assert_allclose((direction * -0.7)[0].numpy(), expected.numpy(), atol=1e-6)
    zero = np.zeros((ndim, *shape), np.float32)
    greedy_kernels.GreedyWorkspace(shape).gradient_step(zero, 0.7)  # no force: no step, no division by zero
    assert not zero.any()


@pytest.mark.parametrize("optimizer", ["adam", "gradient"])
@pytest.mark.parametrize("shape", [(24, 28, 26), (48, 56)])
def test_compiled_iterations_follow_the_torch_iterations(shape, optimizer, monkeypatch):
    """Same schedule, both code paths: the displacements agree to float32 drift over 30 iterations."""
    fixed = _smooth_image(shape, 3)
    shift = torch.zeros(1, len(shape), *shape)
    shift[:, -1] = 1.5
    moving = warp(fixed, shift)
    ndim = len(shape)
    config = replace(
        fireants.resolve_preset(fireants.FireANTsConfig(optimizer=optimizer), shape),
        levels=(2, 1),
        iterations=(15, 15),
    )
    compiled = fireants.greedy_displacement(fixed, moving, config)
    monkeypatch.setattr(greedy_kernels, "AVAILABLE", False)
    reference = fireants.greedy_displacement(fixed, moving, config)
    assert float((compiled - reference).abs().max()) < 1e-3
    interior = (slice(None), slice(-1, None)) + (slice(4, -4),) * ndim
    assert float(compiled[interior].mean()) == pytest.approx(
        -1.5, abs=0.4
    )  # moving = fixed shifted by +1.5: u = -1.5


@pytest.mark.parametrize("shape", SHAPES)
def test_the_field_does_not_depend_on_the_intensity_scale(shape):
    """A 0-255 pair registers exactly as its 0-1 copy: LNCC ignores the scale, and its variance floor
    (lncc_eps) is relative to each image's range. The pair has a faint half (texture 1e-3 of the range) where
    an absolute floor weakens the force on the 0-1 copy only (was: eps 1e-5 on the raw intensities)."""
    ramp = torch.linspace(0.0, 1.0, shape[-1]).expand(1, 1, *shape)
    fixed = torch.where(ramp > 0.5, _smooth_image(shape, 3), 0.5 + 1e-3 * _smooth_image(shape, 8))
    shift = torch.zeros(1, len(shape), *shape)
    shift[:, 0] = 1.0
    moving = warp(fixed, shift)
    config = replace(fireants.resolve_preset(fireants.FireANTsConfig(), shape), levels=(1,), iterations=(10,))
    unit = fireants.greedy_displacement(fixed, moving, config)
    bytes_like = fireants.greedy_displacement(255.0 * fixed + 7.0, 255.0 * moving + 7.0, config)
    torch.testing.assert_close(bytes_like, unit, atol=1e-3, rtol=0)  # float32 rounding of the scaling
    assert float(unit.abs().amax()) > 0.1  # it did register


@pytest.mark.parametrize("shape", SHAPES)
def test_every_channel_drives_the_update_through_its_own_gradient(shape, monkeypatch):
    """Two identical channels register exactly as the one channel does (LNCC averaged over channels); two
    different channels each pull with their own image gradient (was: each channel's dL/dW times one axis of
    the gradient of the channel sum, which is not the gradient of the loss)."""
    monkeypatch.setattr(greedy_kernels, "AVAILABLE", False)  # one code path (torch) for 1 and 2 channels
    fixed = _smooth_image(shape, 3)
    shift = torch.zeros(1, len(shape), *shape)
    shift[:, 0] = 1.0
    moving = warp(fixed, shift)
    config = replace(fireants.resolve_preset(fireants.FireANTsConfig(), shape), levels=(1,), iterations=(10,))
    one = fireants.greedy_displacement(fixed, moving, config)
    two = fireants.greedy_displacement(torch.cat([fixed, fixed], 1), torch.cat([moving, moving], 1), config)
    torch.testing.assert_close(two, one, atol=1e-5, rtol=1e-5)
    d_warped = torch.randn(1, 2, *shape, generator=torch.Generator().manual_seed(5))
    warped = torch.cat([_smooth_image(shape, 6), _smooth_image(shape, 7)], 1)
    expected = d_warped[:, :1] * image_gradient(warped[:, :1]) + d_warped[:, 1:] * image_gradient(
        warped[:, 1:]
    )
    torch.testing.assert_close(fireants.update_direction(d_warped, warped), expected)


def test_compose_with_non_finite_step_stays_in_memory():
    shape = (6, 7, 8)
    ws = greedy_kernels.GreedyWorkspace(shape)
    u = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)
    step = np.zeros_like(u)
    step[0, 1, 1, 1], step[1, 2, 2, 2], step[2, 3, 3, 3] = np.nan, np.inf, -1e30
    out = np.empty_like(u)
    ws.compose(u, step, out)
    untouched = np.ones(shape, bool)
    untouched[1, 1, 1] = untouched[2, 2, 2] = untouched[3, 3, 3] = False
    np.testing.assert_allclose(out[:, untouched], u[:, untouched], atol=1e-6)  # zero step: out = u there


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("force", ["passive", "active", "symmetric"])
def test_demons_force_matches_torch(shape, force):
    from regcore.methods.classical import demons

    fixed, warped = _smooth_image(shape, 4), _smooth_image(shape, 5)
    out = np.empty((len(shape), *shape), np.float32)
    code = {"passive": 0, "active": 1, "symmetric": 2}[force]
    field = _outward_field(shape)
    greedy_kernels.GreedyWorkspace(shape).demons_force(
        fixed[0].numpy(), warped[0].numpy(), field[0].numpy(), code, 0.5, out
    )
    expected = demons.demons_step(fixed, warped, field, demons.DemonsForce(force), 0.5)[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.linalg.norm(out, axis=0).max() <= 0.5 + 1e-5
    outside = ~demons.maps_inside(field)[0, 0].numpy()
    assert 0 < outside.sum() < outside.size / 4 and not out[:, outside].any()  # no force outside the image
    assert np.abs(out[:, ~outside]).max() > 0.05


def _outward_field(shape) -> torch.Tensor:
    """``(1, n, *shape)``: 1.5 voxels along the first axis, away from the centre: the outer voxels map outside."""
    field = torch.zeros((1, len(shape), *shape))
    n = shape[0]
    first = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
    field[0, 0] = (1.5 * torch.sign(first)).view(n, *([1] * (len(shape) - 1)))
    return field


@pytest.mark.parametrize("shape", SHAPES)
def test_multichannel_demons_force_matches_torch(shape):
    """MIND demons' force (sums over channels) compiled equals ``demons.demons_step`` on 4 channels."""
    from regcore.methods.classical import demons

    fixed = torch.cat([_smooth_image(shape, 10 + c) for c in range(4)], dim=1)
    warped = torch.cat([_smooth_image(shape, 20 + c) for c in range(4)], dim=1)
    out = np.empty((len(shape), *shape), np.float32)
    field = _outward_field(shape)
    greedy_kernels.GreedyWorkspace(shape).demons_force(
        fixed[0].numpy(), warped[0].numpy(), field[0].numpy(), 2, 0.5, out
    )
    expected = demons.demons_step(fixed, warped, field, demons.DemonsForce.SYMMETRIC, 0.5)[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.linalg.norm(out, axis=0).max() <= 0.5 + 1e-5


@pytest.mark.parametrize("shape", [(24, 28, 26), (48, 56)])
def test_compiled_mind_demons_follow_the_torch_demons(shape, monkeypatch):
    """features=mind on the CPU runs the fused kernels (every channel) and follows the torch iterations and their
    logged loss."""
    from regcore.image import Image
    from regcore.methods.classical import demons

    fixed = _smooth_image(shape, 7)
    shift = torch.zeros(1, len(shape), *shape)
    shift[:, 0] = 1.2
    moving = 1.0 - warp(fixed, shift)  # inverted contrast
    config = demons.DemonsConfig(levels=2, iterations=10, features="mind")
    run = lambda: (  # noqa: E731
        demons.DemonsMethod().register(Image.from_array(fixed[0, 0]), Image.from_array(moving[0, 0]), config)
    )
    compiled = run()
    assert compiled.config.features == demons.DemonsFeatures.MIND
    monkeypatch.setattr(greedy_kernels, "AVAILABLE", False)
    reference = run()
    assert float((compiled.displacement - reference.displacement).abs().max()) < 1e-3
    # the logged MSE over all descriptor channels (the compiled path sums it channel by channel)
    logged = [[h["similarity"] for h in r.loss_history] for r in (compiled, reference)]
    np.testing.assert_allclose(logged[0], logged[1], rtol=1e-3)


@pytest.mark.parametrize("shape", [(24, 28, 26), (48, 56)])
def test_compiled_demons_follow_the_torch_demons(shape, monkeypatch):
    from regcore.image import Image
    from regcore.methods.classical import demons

    fixed = _smooth_image(shape, 6)
    shift = torch.zeros(1, len(shape), *shape)
    shift[:, 0] = 1.2
    moving = warp(fixed, shift)
    config = demons.DemonsConfig(levels=2, iterations=15)
    run = lambda: (
        demons.DemonsMethod()
        .register(
            Image.from_array(fixed[0, 0]),
            Image.from_array(moving[0, 0]),  # noqa: E731
            config,
        )
        .displacement
    )
    compiled = run()
    monkeypatch.setattr(greedy_kernels, "AVAILABLE", False)
    reference = run()
    assert float((compiled - reference).abs().max()) < 1e-3
    interior = (slice(None), slice(0, 1)) + (slice(4, -4),) * len(shape)
    assert float(compiled[interior].mean()) == pytest.approx(-1.2, abs=0.4)


@pytest.mark.parametrize(
    "shape, levels, iterations, window",
    [
        ((160, 192), (4, 2, 1), (100, 80, 50), 11),  # a 1 mm brain slice: three levels, the coarsest 40 px
        ((80, 96), (2, 1), (80, 50), 11),  # the built-in 2 mm sample: 1/4 would be 20 px across
        ((30, 200), (1,), (50,), 11),  # too thin to coarsen
        ((160, 192, 224), (4, 2, 1), (100, 50, 10), 7),  # 1 mm brain volume
        ((64, 64, 60), (2, 1), (50, 10), 7),  # prostate MR volume
    ],
)
def test_auto_schedule_follows_the_image_size(shape, levels, iterations, window):
    config = fireants.resolve_preset(fireants.FireANTsConfig(), shape)
    assert (config.preset, config.levels, config.iterations, config.window) == (
        "custom",
        levels,
        iterations,
        window,
    )
    custom = replace(fireants.FireANTsConfig(), preset="custom", levels=(2, 1), iterations=(9, 9))
    assert fireants.resolve_preset(custom, shape) is custom


def test_auto_schedule_keeps_a_pyramid_for_thick_slices():
    """A 0.5 x 0.5 x 7.5 mm stack of 11 slices: the in-plane axes still get three levels (the slice axis,
    already coarse, is not shrunk); counted in voxels alone it would get no pyramid at all."""
    shape = (320, 320, 11)
    assert fireants.resolve_preset(fireants.FireANTsConfig(), shape).levels == (1,)
    config = fireants.resolve_preset(fireants.FireANTsConfig(), shape, (0.5, 0.5, 7.5))
    assert config.levels == (4, 2, 1)
    assert pyramid.auto_levels((48, 48, 9), spacing=(0.5, 0.5, 7.5)) == (
        2,
        1,
    )  # 24 px in-plane at x2


def test_thick_slice_pyramid_recovers_a_large_in_plane_shift():
    """12 slices of 5 mm under 1 mm pixels, moving shifted 6 px in-plane: with the spacing the pyramid keeps
    three in-plane levels and recovers the shift; counted in voxels (12 slices) it gets no coarse level. LNCC is
    set: the texture has no object whose centre the contrast test could align, so shifted by more than its grain
    it reads as two contrasts (local r 0.23) and ``auto`` would compare MIND descriptors."""
    from regcore.image import Image

    fixed = _smooth_image((64, 64, 12), 3)
    shift = torch.zeros(1, 3, 64, 64, 12)
    shift[:, 0] = 6.0  # fixed voxel x looks up moving voxel x + 6 along tensor axis 0
    moving = warp(fixed, -shift)  # so that moving o (id + shift) = fixed in the interior
    interior = (slice(12, -12), slice(12, -12), slice(None))

    def recovered_shift(spacing) -> float:
        f = Image.from_array(fixed[0, 0], spacing=spacing)
        m = Image.from_array(moving[0, 0], spacing=spacing)
        u = fireants.FireANTsMethod().register(f, m, fireants.FireANTsConfig(similarity="lncc")).displacement
        return float(u[0, 0][interior].mean())

    assert recovered_shift((1.0, 1.0, 5.0)) == pytest.approx(6.0, abs=0.75)
    assert abs(recovered_shift(1.0) - 6.0) > 1.0 + abs(recovered_shift((1.0, 1.0, 5.0)) - 6.0)


@pytest.mark.parametrize("method", ["fireants", "demons"])
def test_smoothing_in_mm_changes_only_thick_slice_grids(method):
    """``smooth_in_mm`` smooths the slice axis of a 1 x 1 x 4 mm grid over fewer voxels, so the field differs;
    on an isotropic grid the two settings give the same field."""
    from regcore.image import Image
    from regcore.methods import registry

    fixed = _smooth_image((32, 32, 8), 3)
    shift = torch.zeros(1, 3, 32, 32, 8)
    shift[:, 2] = 0.6  # a through-plane shift, so the slice-axis smoothing matters
    shift[:, 0] = 1.5
    moving = warp(fixed, shift)
    spec = registry.get(method)

    def field(spacing, in_mm: bool) -> torch.Tensor:
        f = Image.from_array(fixed[0, 0], spacing=spacing)
        m = Image.from_array(moving[0, 0], spacing=spacing)
        config = spec.make_config({"smooth_in_mm": in_mm})
        return spec.factory().register(f, m, config).displacement

    assert torch.equal(field(1.0, True), field(1.0, False))
    assert float((field((1.0, 1.0, 4.0), True) - field((1.0, 1.0, 4.0), False)).abs().max()) > 1e-3
