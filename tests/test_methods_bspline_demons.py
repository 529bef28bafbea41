"""bspline and demons: B-spline evaluation vs scipy, analytic cases, recovery of a known
deformation, Dice on a synthetic and the real 2D OASIS pair, bad input, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_random_field
from scipy.interpolate import BSpline
from scipy.ndimage import gaussian_filter

from regcore.image import Image
from regcore.methods.base import RegistrationCancelled
from regcore.methods.registry import get
from regcore.spatial.bspline import bspline_basis_matrix, bspline_to_displacement, control_grid_shape
from regcore.spatial.warp import warp, warp_labels


def synthetic_pair(size: int = 64, magnitude: float = 3.0, seed: int = 0):
    """Textured blobs with labels; fixed = moving o (id + u_true). Returns fixed, moving, labels, u_true."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int64)
    for k in range(1, 6):
        cy, cx, r = rng.uniform(0.25 * size, 0.75 * size, 2).tolist() + [rng.uniform(0.08, 0.18) * size]
        labels[np.hypot(yy - cy, xx - cx) < r] = k
    img = gaussian_filter(labels * 0.15, 1.0) + 0.3 * gaussian_filter(rng.standard_normal((size, size)), 2.0)
    u_true = smooth_random_field((size, size), magnitude, seed=seed + 1, sigma=size / 10)
    moving = torch.tensor(img, dtype=torch.float32)[None, None]
    mlab = torch.tensor(labels)[None, None]
    fixed = warp(moving, u_true)
    flab = warp_labels(mlab, u_true)
    return (
        Image.from_array(fixed[0, 0]),
        Image.from_array(moving[0, 0]),
        Image.from_array(flab[0, 0], is_labels=True),
        Image.from_array(mlab[0, 0], is_labels=True),
        u_true,
    )


def dice_mean(a: torch.Tensor, b: torch.Tensor) -> float:
    vals = []
    for k in torch.unique(a).tolist():
        if k == 0:
            continue
        x, y = a == k, b == k
        vals.append(2 * float((x & y).sum()) / float(x.sum() + y.sum()))
    return float(np.mean(vals))


def inner_error(u: torch.Tensor, u_true: torch.Tensor, border: int = 8) -> float:
    return float((u - u_true).norm(dim=1)[0, border:-border, border:-border].mean())


# -- B-spline evaluation -----------------------------------------------------------------------
@pytest.mark.parametrize("size,spacing", [(33, 8), (40, 5), (17, 4)])
def test_basis_matches_scipy_bspline(size, spacing):
    n_ctrl = control_grid_shape((size, size), spacing)[0]
    coeffs = np.random.default_rng(0).standard_normal(n_ctrl)
    x = np.arange(size, dtype=float)
    # Control point k sits at voxel (k-1)*spacing: uniform knots (j - 3) * spacing, j = 0..n_ctrl+3.
    knots = (np.arange(n_ctrl + 4) - 3.0) * spacing
    expected = BSpline(knots, coeffs, 3, extrapolate=False)(x)
    ours = bspline_basis_matrix(size, n_ctrl, spacing, dtype=torch.float64).numpy() @ coeffs
    np.testing.assert_allclose(ours, expected, atol=1e-10)


def test_constant_coefficients_give_a_translation_and_zero_bending():
    from regcore.losses import make_regularizer

    shape = (30, 25)
    c = torch.zeros(1, 2, *control_grid_shape(shape, 6))
    c[:, 0], c[:, 1] = 1.5, -0.75
    u = bspline_to_displacement(c, shape, 6)
    torch.testing.assert_close(u[:, 0], torch.full((1, *shape), 1.5))
    torch.testing.assert_close(u[:, 1], torch.full((1, *shape), -0.75))
    assert float(make_regularizer("bending")(u)) < 1e-10


def test_bspline_displacement_rejects_bad_coefficients():
    with pytest.raises(ValueError, match=r"coeffs must be float \(B, 2,"):
        bspline_to_displacement(torch.zeros(2, 8, 8), (16, 16), 4)


# -- registrations -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,overrides,max_ratio",
    [
        ("bspline", {"iterations": 40, "grid_spacing": 6, "bending_weight": 0.1}, 0.35),
        ("bspline", {"iterations": 40, "grid_spacing": 6, "bending_weight": 0.1, "similarity": "mind"}, 0.5),
        ("demons", {"iterations": 40, "levels": 2}, 0.6),
        ("demons", {"iterations": 40, "levels": 2, "force": "passive", "diffeomorphic": False}, 0.6),
    ],
)
def test_recovers_known_deformation_and_raises_dice(method, overrides, max_ratio):
    fixed, moving, flab, mlab, u_true = synthetic_pair()
    spec = get(method)
    res = spec.factory().register(fixed, moving, spec.make_config(overrides))
    assert res.displacement.shape == u_true.shape
    before, after = inner_error(torch.zeros_like(u_true), u_true), inner_error(res.displacement, u_true)
    assert after < max_ratio * before, (before, after)
    warped_lab = warp_labels(mlab.data[None], res.displacement)[0, 0]
    assert dice_mean(flab.data[0], warped_lab) > dice_mean(flab.data[0], mlab.data[0]) + 0.05
    assert res.runtime_s > 0 and res.loss_history and res.method == method


def oasis_axial_pair(shared_data):
    """OASIS 0456 -> 0455, axial slice 103, with the 35-label maps (../shared/data/brain2d)."""
    from regcore.data import load_pair

    d = shared_data / "brain2d"
    return load_pair(
        d / "images/OASIS_OAS1_0455_MR1_axial103.nii.gz",
        d / "images/OASIS_OAS1_0456_MR1_axial103.nii.gz",
        fixed_labels=d / "labels/OASIS_OAS1_0455_MR1_axial103_seg35.nii.gz",
        moving_labels=d / "labels/OASIS_OAS1_0456_MR1_axial103_seg35.nii.gz",
    )


@pytest.mark.parametrize("method", ["bspline", "demons"])
def test_real_oasis_2d_pair_dice_improves(shared_data, method):
    from regcore.register import run_pair

    pair = oasis_axial_pair(shared_data)
    from regcore.metrics.evaluate import evaluate_identity

    base = evaluate_identity(
        pair.fixed, pair.moving, fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels
    )["dice_mean"]
    _, metrics = run_pair(pair, method, {"iterations": 30})
    assert metrics["dice_mean"] > base + 0.05, (base, metrics["dice_mean"])
    assert metrics["folding_percent"] < 1.0


def test_3d_demons_runs_and_improves():
    fixed2, moving2, *_ = synthetic_pair(size=24)
    f3 = Image.from_array(fixed2.data[0][None].repeat(12, 1, 1))
    m3 = Image.from_array(moving2.data[0][None].repeat(12, 1, 1))
    spec = get("demons")
    res = spec.factory().register(f3, m3, spec.make_config({"iterations": 10, "levels": 1}))
    assert res.displacement.shape == (1, 3, 12, 24, 24)
    assert float(((res.warped.data - f3.data) ** 2).mean()) < float(((m3.data - f3.data) ** 2).mean())


def test_bad_input_and_config():
    fixed, moving, *_ = synthetic_pair(size=32)
    small = Image.from_array(torch.rand(16, 16))
    for name in ("bspline", "demons"):
        spec = get(name)
        with pytest.raises(ValueError, match="same grid"):
            spec.factory().register(fixed, small, spec.make_config())
        with pytest.raises(ValueError, match=r"levels must be in \[1, 5\]"):
            spec.make_config({"levels": 9})
    with pytest.raises(ValueError, match=r"force: expected one of"):
        get("demons").make_config({"force": "sideways"})


@pytest.mark.parametrize("method", ["bspline", "demons"])
def test_progress_callback_can_cancel(method):
    fixed, moving, *_ = synthetic_pair(size=32)
    seen = []

    def stop_after_first(p):
        seen.append(p.fraction)
        return False

    spec = get(method)
    with pytest.raises(RegistrationCancelled):
        spec.factory().register(
            fixed, moving, spec.make_config({"iterations": 20}), progress=stop_after_first
        )
    assert len(seen) == 1 and 0 <= seen[0] <= 1


def test_bspline_large_levels_run_coarser_with_the_same_control_density():
    from regcore.methods.classical.bspline import evaluation_grid

    brain = (160, 192, 224)  # 6.9M voxels
    assert evaluation_grid(brain, 1, 8, 2_000_000) == (
        2,
        4,
    )  # half resolution, half spacing: same physical grid
    assert evaluation_grid(brain, 2, 8, 2_000_000) == (2, 8)  # already small enough
    assert evaluation_grid(brain, 1, 8, 100_000) == (4, 2)  # stops at spacing 2 even if still too large
    assert evaluation_grid(brain, 1, 3, 1_000) == (1, 3)  # odd spacing cannot be halved: unchanged
    assert evaluation_grid((64, 64), 1, 8, 2_000_000) == (1, 8)


def test_demons_histogram_matching_undoes_a_contrast_change(shared_data):
    """Real OASIS slice pair, moving intensities squared (a monotone contrast change): with histogram matching
    (the default, as in SimpleITK's demons) demons still raises Dice; without it the contrast change pulls the
    field away (measured: 0.386 before, 0.444 with matching, 0.286 without)."""
    from regcore.metrics.evaluate import evaluate, evaluate_identity

    pair = oasis_axial_pair(shared_data)
    moving = pair.moving.with_data((pair.moving.data / pair.moving.data.max()) ** 2)
    labels = dict(fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels)
    before = evaluate_identity(pair.fixed, moving, **labels)["dice_mean"]
    spec = get("demons")
    dice = {}
    for match in (True, False):
        config = spec.make_config({"histogram_match": match, "features": "intensity"})
        result = spec.factory().register(pair.fixed, moving, config)
        dice[match] = evaluate(result, **labels)["dice_mean"]
    assert dice[True] > before + 0.03 and dice[True] > dice[False] + 0.1, (before, dice)


def test_demons_bias_correction_stops_coil_shading_reading_as_anatomy():
    """The built-in sample pair: two warps of one brain with different MR bias fields (their known true field is
    the reference). Without N4 the force explains the shading by moving tissue: the field ends further from the
    truth than no registration (measured 1.65 voxels against 1.32) and HD95 worsens; with it (the default)
    demons follows the true field (0.42 voxels) and Dice rises 0.78 -> 0.89."""
    from regcore.data import sample_pair
    from regcore.metrics.evaluate import evaluate

    pair = sample_pair("brain", 2, 0, 1)
    brain = pair.fixed_labels.data[0] > 0
    identity_error = float(pair.true_displacement.norm(dim=1)[0][brain].mean())
    spec = get("demons")
    error, dice = {}, {}
    for corrected in (True, False):
        config = spec.make_config({"bias_correction": corrected})
        result = spec.factory().register(pair.fixed, pair.moving, config)
        assert result.config.bias_correction is corrected  # recorded as run
        error[corrected] = float((result.displacement - pair.true_displacement).norm(dim=1)[0][brain].mean())
        labels = dict(fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels)
        dice[corrected] = evaluate(result, **labels)["dice_mean"]
    assert error[False] > identity_error  # the failure the correction is for
    assert error[True] < 0.5 * identity_error and dice[True] > dice[False] + 0.05, (error, dice)


def test_demons_corrects_bias_only_where_it_applies():
    """MIND descriptors are normalised locally, and N4 models non-negative MR intensities: neither MIND features nor
    an image with negative values (CT in HU) is bias-corrected; what ran is recorded."""
    fixed, moving, *_ = synthetic_pair(size=32)
    fixed, moving = (image.with_data(image.data - image.data.min()) for image in (fixed, moving))  # MR-like
    spec = get("demons")
    config = spec.make_config({"iterations": 2, "levels": 1})
    assert spec.factory().register(fixed, moving, config).config.bias_correction is True
    mind_config = spec.make_config({"iterations": 2, "levels": 1, "features": "mind"})
    assert spec.factory().register(fixed, moving, mind_config).config.bias_correction is False
    hounsfield = moving.with_data(moving.data * 1000.0 - 1000.0)
    ct = spec.factory().register(fixed.with_data(fixed.data * 1000.0 - 1000.0), hounsfield, config)
    assert ct.config.bias_correction is False


@pytest.mark.parametrize(
    "overrides, in_2d, small_3d, large_3d",
    [
        ({}, (50, 50, 50), (50, 50, 50), (100, 60, 20)),  # auto: large 3D moves work off full resolution
        ({"levels": 4}, (50,) * 4, (50,) * 4, (100, 100, 60, 20)),
        ({"levels": 1}, (50,), (50,), (20,)),
        ({"iterations": "30"}, (30, 30, 30), (30, 30, 30), (30, 30, 30)),  # one number: every level
        ({"iterations": "80, 40, 10"}, (80, 40, 10), (80, 40, 10), (80, 40, 10)),
        ({"iterations": [7, 3], "levels": 2}, (7, 3), (7, 3), (7, 3)),  # a JSON recipe's list
    ],
)
def test_demons_iterations_per_level(overrides, in_2d, small_3d, large_3d):
    from regcore.methods.classical.demons import level_iterations

    config = get("demons").make_config(overrides)
    assert level_iterations(config, (2048, 2048)) == in_2d  # 2D: the full-resolution level stays cheap
    assert level_iterations(config, (49, 54, 9)) == small_3d  # a thick-slice spine crop
    assert level_iterations(config, (160, 192, 224)) == large_3d  # a 1 mm brain


def test_demons_runs_the_iterations_it_is_given_at_each_level():
    fixed, moving, *_ = synthetic_pair(size=32)
    messages = []
    spec = get("demons")
    result = spec.factory().register(
        fixed,
        moving,
        spec.make_config({"iterations": "12, 4", "levels": 2}),
        progress=lambda p: messages.append(p.message),
    )
    assert "level 1/2, iter 12/12" in messages and "level 2/2, iter 4/4" in messages
    assert not any("iter 13/" in m or "iter 5/4" in m for m in messages)
    assert result.config.iterations == (12, 4)


def test_demons_auto_settings_are_the_counts_it_runs():
    """``auto_settings`` (shown on the Register page) names the per-level counts of auto iterations, and the
    result's config records them instead of "auto"."""
    spec = get("demons")
    auto = spec.make_config({})
    assert spec.auto_settings(auto, (160, 192, 224), (1.0, 1.0, 1.0)) == {"iterations": (100, 60, 20)}
    assert spec.auto_settings(auto, (64, 64), (1.0, 1.0)) == {"iterations": (50, 50, 50)}
    assert spec.auto_settings(spec.make_config({"iterations": "30"}), (64, 64), (1.0, 1.0)) == {}
    fixed, moving, *_ = synthetic_pair(size=32)
    result = spec.factory().register(fixed, moving, spec.make_config({"levels": 2}))
    assert result.config.iterations == (50, 50) and result.config.levels == 2


@pytest.mark.parametrize(
    "overrides, error",
    [
        ({"iterations": "100, 60"}, r"DemonsConfig.iterations gives 2 counts for 3 levels"),
        ({"iterations": "100, x, 20"}, r"DemonsConfig.iterations: expected a number or numbers separated by"),
        ({"iterations": "100, 0, 20"}, r"DemonsConfig.iterations entries must be in \[1, 1000\]"),
        ({"iterations": 2.5}, r"DemonsConfig.iterations must be an integer or a list"),
    ],
)
def test_demons_iterations_bad_input_names_the_field(overrides, error):
    with pytest.raises((ValueError, TypeError), match=error):
        get("demons").make_config(overrides)


def test_bspline_runs_only_the_levels_a_small_image_allows_and_records_them():
    """``levels`` is a maximum for bspline: a coarse level under 24 voxels along an axis it shrinks is not run (a
    48-pixel image runs x2 and x1, not x4: at x4 it is 12 pixels, under two 7-pixel LNCC windows and two 8-voxel
    control spacings across), and the result's config records the levels that ran."""
    from regcore.methods.classical.pyramid import auto_levels

    assert auto_levels((44, 59, 41), 3, (0.4, 0.4, 0.4)) == (1,)  # a prostate TRUS volume
    assert auto_levels((49, 54, 9), 3, (0.5, 0.5, 7.5)) == (2, 1)  # a thick-slice spine crop: in-plane only
    assert auto_levels((160, 224), 3) == (4, 2, 1)  # an OASIS slice keeps all three
    with pytest.raises(ValueError, match="levels must be an int >= 1"):
        auto_levels((64, 64), 0)
    fixed, moving, *_ = synthetic_pair(size=48)
    spec = get("bspline")
    result = spec.factory().register(fixed, moving, spec.make_config({"levels": 3, "iterations": 5}))
    assert result.config.levels == 2


def test_bspline_keeps_the_gland_of_a_small_real_volume(shared_data):
    """Prostate MR -> TRUS case 1 (44 x 59 x 41 voxels, centre-aligned gland Dice 0.71): with three levels the x4
    level was 11 voxels across and bspline collapsed the gland (Dice 0.003, 19 % folding); with the one level this
    image allows it keeps it, without folding."""
    from regcore.data.prostate import prostate_cases
    from regcore.metrics import evaluate

    (case,) = prostate_cases(shared_data / "prostate_mr_us", cases=["case000001"])
    spec = get("bspline")
    result = spec.factory().register(case.us, case.mr, spec.make_config({}))
    assert result.config.levels == 1
    metrics = evaluate(result, fixed_labels=case.us_gland, moving_labels=case.mr_gland)
    assert metrics["dice_mean"] > 0.5
    assert metrics["folding_percent"] < 0.5


def test_bspline_does_not_fold_the_thick_spine_stack(shared_data):
    """Spine T2w -> T2* crop (0.5 x 0.5 x 7.5 mm, 9 slices): with the levels added and unbounded (the classic FFD,
    ``fold_free=False``) bspline folded 17.8 % of the voxels; composed levels under the injectivity bound fold none
    and still raise the cord Dice above the header alignment."""
    from regcore.io import load_image
    from regcore.metrics import evaluate, evaluate_identity
    from regcore.register import prepare_moving

    d = shared_data / "spine_multimodal"
    fixed = load_image(d / "images" / "T2star_crop.nii.gz")
    moving = prepare_moving(fixed, load_image(d / "images" / "T2w.nii.gz"))
    labels = {
        "fixed_labels": load_image(d / "labels" / "T2star_crop_cordseg.nii.gz", is_labels=True),
        "moving_labels": prepare_moving(
            fixed, load_image(d / "labels" / "T2w_cordseg_manual.nii.gz", is_labels=True)
        ),
    }
    spec = get("bspline")
    identity = evaluate_identity(fixed, moving, **labels)["dice_mean"]
    folded = {}
    for fold_free in (True, False):  # LNCC, as before similarity="auto" took MIND for these two contrasts
        result = spec.factory().register(
            fixed, moving, spec.make_config({"fold_free": fold_free, "similarity": "lncc"})
        )
        metrics = evaluate(result, **labels)
        folded[fold_free] = metrics["folding_percent"]
        if fold_free:
            assert metrics["dice_mean"] > identity + 0.05
    assert folded[True] == 0.0
    assert folded[False] > 5.0

    auto = spec.factory().register(fixed, moving, spec.make_config({}))  # T2w and T2*: different contrasts
    assert auto.config.similarity == "mind"
    metrics = evaluate(auto, **labels)
    assert metrics["folding_percent"] == 0.0 and metrics["dice_mean"] > identity + 0.1
