"""Rigid/affine registration (regcore.methods.classical.affine, .rigid) and the shared classical helpers
(pyramid, filters, lncc)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from regcore.image import Geometry, Image
from regcore.losses import make_similarity
from regcore.methods import registry
from regcore.methods.base import RegistrationCancelled
from regcore.methods.classical import affine as affine_mod
from regcore.methods.classical.filters import box_filter
from regcore.methods.classical.lncc import lncc_and_gradient
from regcore.methods.classical.pyramid import (
    axis_factors,
    downsample,
    level_shape,
    resize_field,
    validate_schedule,
)
from regcore.spatial.affine import affine_to_displacement
from regcore.spatial.warp import warp


def _blob_image(shape=(64, 64), seed=0) -> np.ndarray:
    """Smooth asymmetric test image in [0, 1] with structure everywhere."""
    g = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(g.standard_normal(shape), 3.0)
    yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    img = img / np.abs(img).max() + 2.0 * np.exp(-((yy - 0.2) ** 2 + (xx + 0.1) ** 2 * 2) / 0.2)
    img *= (yy**2 + xx**2) < 0.85
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def _about_centre(linear: np.ndarray, shift, shape) -> torch.Tensor:
    c = (np.array(shape) - 1) / 2
    t = c - linear @ c + np.asarray(shift, dtype=float)
    return torch.tensor(np.concatenate([linear, t[:, None]], 1)[None], dtype=torch.float32)


def _pair_from_matrix(matrix: torch.Tensor, shape=(64, 64)):
    """fixed = moving o A exactly: moving = fixed o A^-1 (A maps fixed voxel -> moving voxel)."""
    fixed = torch.tensor(_blob_image(shape))[None, None]
    n = len(shape)
    full = torch.cat([matrix[0], torch.tensor([[0.0] * n + [1.0]])])
    inv = torch.linalg.inv(full)[:n][None]
    moving = warp(fixed, affine_to_displacement(inv, shape))
    return Image.from_array(fixed[0, 0], name="fixed"), Image.from_array(moving[0, 0], name="moving")


FAST = {"levels": (2, 1), "iterations": (60, 30), "learning_rate": 0.02}


def _error(result, matrix, shape, mask):
    u_true = affine_to_displacement(matrix, shape)
    before = u_true.norm(dim=1)[0][mask].mean()
    after = (result.displacement - u_true).norm(dim=1)[0][mask].mean()
    return float(before), float(after)


def test_affine_recovers_known_affine_with_ncc():
    th = 0.12
    linear = np.array([[1.06 * math.cos(th), -math.sin(th)], [math.sin(th), 0.95 * math.cos(th)]])
    matrix = _about_centre(linear, (3.0, -2.0), (64, 64))
    fixed, moving = _pair_from_matrix(matrix)
    spec = registry.get("affine")
    result = spec.factory().register(fixed, moving, spec.make_config({**FAST, "similarity": "ncc"}))
    mask = fixed.data[0] > 0.05
    before, after = _error(result, matrix, (64, 64), mask)
    assert after < 0.3 * before, (before, after)
    assert after < 0.5
    # the affine and the dense field describe the same map
    np.testing.assert_allclose(
        affine_to_displacement(result.affine[None], (64, 64)).numpy(), result.displacement.numpy(), atol=1e-4
    )
    assert result.warped.shape == fixed.shape and result.loss_history


def test_rigid_recovers_rotation_and_translation_with_default_mi():
    th = -0.15
    linear = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    matrix = _about_centre(linear, (-2.5, 4.0), (64, 64))
    fixed, moving = _pair_from_matrix(matrix)
    spec = registry.get("rigid")
    config = spec.make_config(FAST)
    assert config.transform == "rigid" and config.similarity == "mi"
    result = spec.factory().register(fixed, moving, config)
    before, after = _error(result, matrix, (64, 64), fixed.data[0] > 0.05)
    assert after < 0.3 * before, (before, after)
    rot = result.affine[:, :2].numpy()
    np.testing.assert_allclose(rot @ rot.T, np.eye(2), atol=1e-4)  # rigid stays orthonormal


@pytest.mark.parametrize("shape", [(20, 24, 28), (30, 26)])
def test_points_warp_equals_the_full_warp_at_those_voxels(shape):
    n = len(shape)
    g = torch.Generator().manual_seed(0)
    moving = torch.rand(1, 2, *shape, generator=g)
    matrix = torch.cat(
        [torch.eye(n) + 0.05 * torch.randn(n, n, generator=g), 2 * torch.randn(n, 1, generator=g)], 1
    )
    full = affine_mod._warp_affine(moving, matrix)
    points, at_points = affine_mod._VoxelSampler(500).draw(full)
    assert points.shape == (500, n) and at_points.shape == (1, 2, 500, *([1] * (n - 1)))
    torch.testing.assert_close(affine_mod._warp_points(moving, matrix, points), at_points, atol=1e-5, rtol=0)


def _sampled_mi_case():
    """``(matrix, fixed, moving)``: a known 2D affine (rotation 0.1 rad, scales 1.05 / 0.96, shift (2.5, -3) voxels)
    on a 64^2 pair, for the sampled-MI tests."""
    th = 0.1
    linear = np.array([[1.05 * math.cos(th), -math.sin(th)], [math.sin(th), 0.96 * math.cos(th)]])
    matrix = _about_centre(linear, (2.5, -3.0), (64, 64))
    return (matrix, *_pair_from_matrix(matrix))


def test_sampled_mi_recovers_a_known_affine_as_well_as_every_voxel():
    """Both levels of a 64^2 pair hold more voxels than 300 samples: the sampled path runs throughout."""
    matrix, fixed, moving = _sampled_mi_case()
    spec = registry.get("affine")
    errors = {}
    for samples in (300, 0):
        result = spec.factory().register(
            fixed, moving, spec.make_config({**FAST, "spatial_samples": samples})
        )
        errors[samples] = _error(result, matrix, (64, 64), fixed.data[0] > 0.05)
    (before, sampled), (_, every) = errors[300], errors[0]
    assert sampled < 0.15 * before and every < 0.15 * before, errors
    assert sampled < every + 0.05, errors  # the last level's iterates averaged (IterateAverage)
    again = spec.factory().register(fixed, moving, spec.make_config({**FAST, "spatial_samples": 300}))
    assert _error(again, matrix, (64, 64), fixed.data[0] > 0.05)[1] == sampled  # seeded: repeatable


def test_iterate_average_is_the_mean_from_first_on():
    average = affine_mod.IterateAverage(first=2)
    for it in range(5):
        average.add(it, {"t": torch.tensor([float(it), 2.0 * it]), "linear": torch.full((2, 2), float(it))})
    mean = average.mean()
    torch.testing.assert_close(mean["t"], torch.tensor([3.0, 6.0]))  # iterations 2, 3, 4
    torch.testing.assert_close(mean["linear"], torch.full((2, 2), 3.0))


def test_a_sampled_last_level_of_zero_iterations_keeps_the_previous_levels_result():
    """No iterate to average: the result is where the coarser level left it (as with every voxel), no error."""
    matrix, fixed, moving = _sampled_mi_case()
    spec = registry.get("affine")
    config = spec.make_config(
        {"levels": (2, 1), "iterations": (60, 0), "learning_rate": 0.02, "spatial_samples": 300}
    )
    before, after = _error(
        spec.factory().register(fixed, moving, config), matrix, (64, 64), fixed.data[0] > 0.05
    )
    assert after < 0.3 * before, (before, after)


class _LastIterate(affine_mod.IterateAverage):
    """What the optimiser returned before the averaging: the last iterate."""

    def add(self, iteration, params):
        self.total, self.count = {k: v.detach().clone() for k, v in params.items()}, 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_averaging_the_sampled_iterates_lands_nearer_the_known_affine(monkeypatch, seed):
    """With 300 voxels drawn afresh per iteration the last iterate ends where the last draws pushed it (mean error
    0.19 voxels over five sampler seeds); the mean of the last level's later iterates lands at 0.03 (every voxel:
    0.03)."""
    matrix, fixed, moving = _sampled_mi_case()
    spec = registry.get("affine")
    config = spec.make_config({**FAST, "spatial_samples": 300})
    real_init = affine_mod._VoxelSampler.__init__
    monkeypatch.setattr(
        affine_mod._VoxelSampler, "__init__", lambda self, samples, seed=seed: real_init(self, samples, seed)
    )
    mask = fixed.data[0] > 0.05
    averaged = _error(spec.factory().register(fixed, moving, config), matrix, (64, 64), mask)[1]
    monkeypatch.setattr(affine_mod, "IterateAverage", _LastIterate)
    last = _error(spec.factory().register(fixed, moving, config), matrix, (64, 64), mask)[1]
    assert averaged < 0.5 * last and averaged < 0.08, (averaged, last)


def test_affine_handles_anisotropic_spacing_and_3d():
    shape = (24, 28, 20)
    g = np.random.default_rng(1)
    vol = ndimage.gaussian_filter(g.standard_normal(shape), 2.0).astype(np.float32)
    fixed = Image.from_array(vol, spacing=(1.0, 1.0, 2.0))
    moving_t = warp(
        fixed.batch(), affine_to_displacement(_about_centre(np.eye(3), (1.5, -1.0, 0.5), shape), shape)
    )
    moving = Image.from_array(moving_t[0, 0], geometry=fixed.geometry)
    spec = registry.get("affine")
    result = spec.factory().register(
        fixed,
        moving,
        spec.make_config({"similarity": "ncc", "levels": (1,), "iterations": (60,), "learning_rate": 0.02}),
    )
    # moving = fixed o (x + s) => fixed = moving o (x - s): translation of -s voxels
    np.testing.assert_allclose(result.affine[:, 3].numpy(), [-1.5, 1.0, -0.5], atol=0.3)
    assert result.displacement.shape == (1, 3, *shape)


def test_cancel_via_progress_raises():
    fixed, moving = _pair_from_matrix(_about_centre(np.eye(2), (2.0, 0.0), (64, 64)))
    spec = registry.get("affine")
    seen = []

    def stop_after_first(p):
        seen.append(p.fraction)
        return len(seen) < 2

    with pytest.raises(RegistrationCancelled):
        spec.factory().register(fixed, moving, spec.make_config(FAST), progress=stop_after_first)
    assert 0.0 <= seen[0] <= 1.0


def _start(init: str, fixed: np.ndarray, moving: np.ndarray) -> torch.Tensor:
    """``_start_translation`` in voxels for two 2D arrays (MI, the default similarity, coarsest level x4)."""
    f, m = (torch.from_numpy(a)[None, None] for a in (fixed, moving))
    frame = affine_mod._Frame(fixed.shape, (1.0, 1.0), f.device)
    similarity = make_similarity("mi", 2)
    f_l, m_l = downsample(f, 4, (1.0, 1.0)), downsample(m, 4, (1.0, 1.0))
    coarsest = (f_l, m_l, affine_mod._level_frame(fixed.shape, (1.0, 1.0), tuple(f_l.shape[2:]), f.device))
    t = affine_mod._start_translation(
        init, f, m, frame, affine_mod.TransformKind.AFFINE, similarity, coarsest
    )
    return t * frame.scale


def test_auto_start_takes_the_centres_of_mass_for_an_object_on_a_background():
    """A blob shifted by (12, -9) px: the centres of mass are right and MI prefers them to the identity."""
    blob = _blob_image((48, 48))
    fixed, moving = np.zeros((96, 96), np.float32), np.zeros((96, 96), np.float32)
    fixed[24:72, 24:72] = blob
    moving[36:84, 15:63] = blob
    moments = _start("centre_of_mass", fixed, moving)
    torch.testing.assert_close(moments, torch.tensor([12.0, -9.0]), atol=0.5, rtol=0)
    torch.testing.assert_close(_start("auto", fixed, moving), moments)
    assert _start("identity", fixed, moving).abs().max() == 0


def test_auto_start_keeps_the_identity_when_the_centres_of_mass_mislead():
    """Texture filling the frame, aligned, with the moving image's left third three times as bright (a stain or
    shading difference): the centres of mass differ by pixels, MI still peaks at the identity."""
    g = np.random.default_rng(3)
    fixed = ndimage.gaussian_filter(g.random((96, 96)), 2.0).astype(np.float32)
    moving = fixed.copy()
    moving[:, :32] *= 3.0
    assert float(_start("centre_of_mass", fixed, moving).abs().max()) > 3.0
    assert _start("auto", fixed, moving).abs().max() == 0
    with pytest.raises(ValueError, match="init must be one of"):
        _start("middle", fixed, moving)


@pytest.mark.parametrize("name", ["affine", "rigid"])
def test_bad_input_raises(name):
    method = registry.get(name).factory()
    good = Image.from_array(_blob_image((32, 32)))
    other_grid = Image.from_array(_blob_image((32, 40)))
    with pytest.raises(ValueError, match="same grid"):
        method.register(good, other_grid)
    shifted = Image(good.data, Geometry((32, 32), (1.0, 1.0), (5.0, 0.0), ((1.0, 0.0), (0.0, 1.0))))
    with pytest.raises(ValueError, match="same grid"):
        method.register(good, shifted)
    nan = good.data.clone()
    nan[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        method.register(good, good.with_data(nan))
    with pytest.raises(TypeError, match="regcore.Image"):
        method.register(good.data, good)
    labels = Image.from_array(np.zeros((32, 32), int), is_labels=True)
    with pytest.raises(ValueError, match="label map"):
        method.register(good, labels)
    with pytest.raises(ValueError, match="2D or 3D"):
        Image.from_array(np.zeros((4, 4, 4, 4)))
    bad_schedule = registry.get(name).make_config({"levels": (0,), "iterations": (5,)})
    with pytest.raises(ValueError, match="levels"):
        method.register(good, good, bad_schedule)


def test_schedule_validation():
    with pytest.raises(ValueError, match="one count per level"):
        validate_schedule((4, 2), (10,))
    with pytest.raises(ValueError, match=">= 1"):
        validate_schedule((0,), (10,))


# -- shared helpers, cross-checked against scipy / autograd --------------------------------------


def test_downsample_blurs_at_half_the_factor_truncated_at_two_sigma():
    x = torch.rand(1, 1, 33, 41, dtype=torch.float64)
    small = downsample(x, 2)
    assert small.shape[2:] == level_shape((33, 41), 2) == (16, 20)
    blurred = ndimage.gaussian_filter(x[0, 0].numpy(), 1.0, mode="nearest", truncate=2.0)
    np.testing.assert_allclose(small[0, 0, 0, 0].item(), blurred[0, 0], atol=1e-12)  # corners coincide
    np.testing.assert_allclose(small[0, 0, -1, -1].item(), blurred[-1, -1], atol=1e-12)
    assert downsample(x, 1) is x


def test_downsample_of_many_channels_is_each_channel_downsampled():
    """A 12-channel MIND image is downsampled channel by channel (no full-size blurred copy): the same numbers as
    scipy's blur of each channel at the corners, and each channel as if it were alone."""
    x = torch.rand(1, 12, 17, 20, 9, generator=torch.Generator().manual_seed(0))
    small = downsample(x, 2, (1.0, 1.0, 2.0))
    assert small.shape == (1, 12, 8, 10, 9)
    for c in (0, 7, 11):
        assert torch.equal(small[:, c : c + 1], downsample(x[:, c : c + 1], 2, (1.0, 1.0, 2.0)))
        blurred = ndimage.gaussian_filter(
            x[0, c].double().numpy(), (1.0, 1.0, 0.0), mode="nearest", truncate=2.0
        )
        np.testing.assert_allclose(small[0, c, 0, 0].numpy(), blurred[0, 0], atol=1e-5)


def test_anisotropic_pyramid_shrinks_thick_slice_axes_less():
    # 0.5 x 0.5 x 7.5 mm (a T2* stack): factor 4 aims at 2 mm voxels, so the 7.5 mm axis is not shrunk
    assert axis_factors(4, 3, (0.5, 0.5, 7.5)) == (4.0, 4.0, 1.0)
    assert axis_factors(4, 3, (1.0, 1.0, 2.0)) == (4.0, 4.0, 2.0)
    assert axis_factors(4, 2) == axis_factors(4, 2, (1.5, 1.5)) == (4.0, 4.0)  # isotropic: plain factor
    assert level_shape((320, 320, 11), 4, (0.5, 0.5, 7.5)) == (80, 80, 11)
    assert level_shape((320, 320, 11), 4) == (80, 80, 4)  # without spacing the thin axis collapses
    x = torch.rand(1, 1, 16, 18, 7, dtype=torch.float64)
    small = downsample(x, 2, (1.0, 1.0, 3.0))
    assert small.shape[2:] == (8, 9, 7)
    blurred = ndimage.gaussian_filter(x[0, 0].numpy(), (1.0, 1.0, 0.0), mode="nearest", truncate=2.0)
    np.testing.assert_allclose(small[0, 0, 0, 0].numpy(), blurred[0, 0], atol=1e-12)  # thick axis untouched
    assert downsample(x, 2, (1.0, 1.0, 1.0)).shape[2:] == level_shape((16, 18, 7), 2) == (8, 9, 4)
    assert downsample(x, 4, (1.0, 1.0, 20.0)).shape[2:] == (4, 4, 7)
    with pytest.raises(ValueError, match="spacing must give 3 voxel sizes"):
        axis_factors(2, 3, (1.0, 1.0))


def test_box_filter_matches_scipy_uniform_filter():
    x = torch.rand(1, 1, 13, 15, dtype=torch.float64)
    ours = box_filter(x, 5)[0, 0].numpy()
    ref = ndimage.uniform_filter(x[0, 0].numpy(), 5, mode="constant")
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_lncc_gradient_matches_autograd_and_regcore_loss():
    g = torch.Generator().manual_seed(0)
    fixed = torch.rand(1, 1, 9, 10, 11, generator=g, dtype=torch.float64)
    warped = torch.rand(1, 1, 9, 10, 11, generator=g, dtype=torch.float64).requires_grad_(True)
    loss, grad = lncc_and_gradient(fixed, warped.detach(), 5)
    ref = make_similarity("lncc", 3, window=5)(fixed, warped)
    ref.backward()
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-6)
    np.testing.assert_allclose(grad.numpy(), warped.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_resize_field_keeps_a_linear_map():
    shape, small = (33, 41), (17, 21)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in small], indexing="ij"))[
        None
    ]
    u_small = 0.1 * grid  # u(x) = 0.1 x in small voxels
    u_big = resize_field(u_small, shape)
    big = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))[
        None
    ]
    torch.testing.assert_close(u_big, 0.1 * big, atol=1e-4, rtol=1e-4)
