"""Deformable classical methods: dense, svf, fireants, mind_convex (regcore.methods.classical)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_random_field
from scipy import ndimage

from regcore.image import Image
from regcore.methods import registry
from regcore.methods.base import RegistrationCancelled
from regcore.spatial.lengths import max_vector_length
from regcore.spatial.svf import integrate_svf, squaring_steps
from regcore.spatial.warp import warp, warp_labels

METHODS = ["dense", "svf", "fireants", "mind_convex"]

# Small schedules so each test takes a few seconds on 2 shared cores (defaults are for real images).
FAST = {
    "dense": {"levels": (2, 1), "iterations": (40, 30), "learning_rate": 0.2, "weight": 0.5},
    "svf": {"levels": (2, 1), "iterations": (40, 30), "learning_rate": 0.2, "weight": 0.5},
    "fireants": {"preset": "custom", "levels": (2, 1), "iterations": (60, 30), "step_size": 0.5},
    "mind_convex": {
        "grid_step": 2,
        "search_radius": 3,
        "io_level": 1,
        "iterations": 80,
        "learning_rate": 0.2,
        "weight": 0.3,
    },
}
# Remaining mean error as a fraction of the initial one. MIND descriptors are patch-based, which
# blurs the optimum by about a voxel on this small image, so ConvexAdam gets a looser bound.
MAX_ERROR_FRACTION = {"dense": 0.3, "svf": 0.3, "fireants": 0.3, "mind_convex": 0.4}
SHAPE = (64, 64)


def _synthetic_labels(shape=SHAPE) -> np.ndarray:
    """Label map of discs and bars (5 labels) on a 64x64 grid."""
    yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    lab = np.zeros(shape, np.int64)
    lab[(yy - 22) ** 2 + (xx - 22) ** 2 < 90] = 1
    lab[(yy - 40) ** 2 + (xx - 42) ** 2 < 120] = 2
    lab[(yy > 12) & (yy < 52) & (xx > 49) & (xx < 55)] = 3
    lab[(yy > 46) & (yy < 52) & (xx > 10) & (xx < 36)] = 4
    lab[(yy - 24) ** 2 + (xx - 44) ** 2 < 25] = 5
    return lab


def _synthetic_pair(magnitude=3.0):
    """moving = intensity image of the labels; fixed = moving o (id + u_true) exactly, so the right
    answer is u_true (fixed -> moving voxels)."""
    lab = _synthetic_labels()
    texture = ndimage.gaussian_filter(np.random.default_rng(3).standard_normal(SHAPE), 2.0)
    img = ndimage.gaussian_filter(lab.astype(float) * 0.18, 1.0) + 0.15 * texture / np.abs(texture).max()
    img = ((img - img.min()) / (img.max() - img.min())).astype(np.float32)
    u_true = smooth_random_field(SHAPE, magnitude, seed=1, sigma=6.0)
    moving_t = torch.tensor(img)[None, None]
    fixed_t = warp(moving_t, u_true)
    lab_t = torch.tensor(lab)[None, None]
    fixed_lab = warp_labels(lab_t, u_true)
    return (
        Image.from_array(fixed_t[0, 0], name="fixed"),
        Image.from_array(moving_t[0, 0], name="moving"),
        fixed_lab[0, 0].numpy(),
        lab,
        u_true,
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    labs = sorted((set(np.unique(a)) | set(np.unique(b))) - {0})
    return float(np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labs]))


def _folding_percent(u: torch.Tensor) -> float:
    from regcore.spatial.jacobian import jacobian_determinant

    return float((jacobian_determinant(u) <= 0).float().mean() * 100)


def _run(name, fixed, moving, overrides=None, progress=None):
    spec = registry.get(name)
    return spec.factory().register(
        fixed, moving, spec.make_config({**FAST[name], **(overrides or {})}), progress=progress
    )


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic_pair()


@pytest.mark.parametrize("name", METHODS)
def test_recovers_known_deformation_and_raises_dice(name, synthetic):
    fixed, moving, fixed_lab, moving_lab, u_true = synthetic
    result = _run(name, fixed, moving)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # borders are under-determined
    before = float(u_true[inner].norm(dim=1).mean())
    after = float((result.displacement - u_true)[inner].norm(dim=1).mean())
    assert after < MAX_ERROR_FRACTION[name] * before, f"{name}: mean error {before:.2f} -> {after:.2f} voxels"
    warped_lab = warp_labels(torch.tensor(moving_lab)[None, None], result.displacement)[0, 0].numpy()
    assert _dice(fixed_lab, warped_lab) > _dice(fixed_lab, moving_lab) + 0.05
    assert result.displacement.shape == (1, 2, *SHAPE) and result.method == name
    assert result.loss_history and result.runtime_s > 0
    ncc_before = np.corrcoef(fixed.numpy().ravel(), moving.numpy().ravel())[0, 1]
    ncc_after = np.corrcoef(fixed.numpy().ravel(), result.warped.numpy().ravel())[0, 1]
    assert ncc_after > ncc_before


@pytest.mark.parametrize(
    ("name", "overrides"), [("dense", {"similarity": "mse"}), ("svf", {}), ("fireants", {})]
)
def test_the_field_does_not_depend_on_the_intensity_scale(name, overrides, synthetic):
    """A 0-4000 copy of the pair (as a raw MR) registers as the 0-1 pair: the methods scale intensities to [0, 1]
    first, so the regulariser weight and the similarity's stabilisers mean the same (was: MSE 1.6e7x larger than
    the regulariser, and the LNCC floor vanished)."""
    fixed, moving, *_ = synthetic
    raw = [Image.from_array(4000.0 * image.numpy() - 1000.0, name=image.name) for image in (fixed, moving)]
    unit = _run(name, fixed, moving, overrides).displacement
    difference = (_run(name, *raw, overrides).displacement - unit).abs()
    # float32 drift over 70 Adam steps (unscaled, before: svf 0.12, dense-MSE 7.6 voxels)
    assert float(difference.amax()) < 0.05
    assert float(difference.mean()) < 1e-3


@pytest.mark.parametrize("name", ["svf", "fireants"])
def test_diffeomorphic_methods_do_not_fold(name, synthetic):
    fixed, moving, *_ = synthetic
    result = _run(name, fixed, moving)
    assert _folding_percent(result.displacement) == 0.0


def test_svf_returns_velocity_and_inverse(synthetic):
    fixed, moving, *_ = synthetic
    result = _run("svf", fixed, moving)
    assert result.velocity is not None and result.velocity.shape == result.displacement.shape
    u, u_inv = result.displacement, result.extras["inverse_displacement"]
    residual = u_inv + warp(u, u_inv)  # (id + u) o (id + u_inv) - id
    assert float(residual[..., 4:-4, 4:-4].abs().max()) < 0.1 * float(u.abs().max())


def test_svf_automatic_squaring_count(synthetic):
    """integration_steps=0 (the default) squares as often as regcore.spatial.svf.squaring_steps asks for the
    velocity at hand: the returned field is exp(v) with that count, and it equals the one from a fixed 7 steps
    to a small fraction of a voxel (what exp(v) is), with the count below 7 on this pair."""
    fixed, moving, *_ = synthetic
    result = _run("svf", fixed, moving)
    v = result.velocity
    steps = squaring_steps(float(max_vector_length(v)))
    assert 0 < steps < 7
    torch.testing.assert_close(result.displacement, integrate_svf(v, steps))
    assert float((integrate_svf(v, 7) - result.displacement).abs().max()) < 0.05


@pytest.mark.parametrize("name", METHODS)
def test_real_brain_slice_dice_improves(name, shared_data):
    import nibabel as nib

    def load(sub, stem, labels=False):
        arr = np.squeeze(np.asarray(nib.load(str(shared_data / "brain2d" / sub / f"{stem}.nii.gz")).dataobj))
        return arr.astype(np.int64) if labels else Image.from_array(arr.astype(np.float32), name=stem)

    a, b = "OASIS_OAS1_0455_MR1_axial103", "OASIS_OAS1_0456_MR1_axial103"
    fixed, moving = load("images", a), load("images", b)
    fixed_lab, moving_lab = load("labels", f"{a}_seg35", True), load("labels", f"{b}_seg35", True)
    spec = registry.get(name)
    result = spec.factory().register(fixed, moving, spec.make_config())  # defaults: what users get
    warped_lab = warp_labels(torch.tensor(moving_lab)[None, None], result.displacement)[0, 0].numpy()
    before, after = _dice(fixed_lab, moving_lab), _dice(fixed_lab, warped_lab)
    assert after > before + 0.05, f"{name}: Dice {before:.3f} -> {after:.3f}"
    assert _folding_percent(result.displacement) < 0.5


@pytest.mark.parametrize("name", METHODS)
def test_cancel_via_progress_raises(name, synthetic):
    fixed, moving, *_ = synthetic
    fractions = []

    def cancel_on_second_report(p):
        fractions.append(p.fraction)
        return len(fractions) < 2

    with pytest.raises(RegistrationCancelled):
        _run(name, fixed, moving, progress=cancel_on_second_report)
    assert all(0.0 <= f <= 1.0 for f in fractions)


@pytest.mark.parametrize("name", METHODS)
def test_bad_input_raises(name):
    method = registry.get(name).factory()
    good = Image.from_array(np.random.default_rng(0).random((32, 32)).astype(np.float32))
    with pytest.raises(ValueError, match="same grid"):
        method.register(good, Image.from_array(np.zeros((32, 36), np.float32)))
    nan = good.data.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"fixed .* contains NaN or infinite voxels"):
        method.register(good.with_data(nan), good)
    with pytest.raises(ValueError, match=r"moving .* contains NaN or infinite voxels"):
        method.register(good, good.with_data(nan))
    with pytest.raises(TypeError, match="regcore.Image"):
        method.register(good, np.zeros((32, 32)))
    with pytest.raises(ValueError, match="label map"):
        method.register(Image.from_array(np.zeros((32, 32), int), is_labels=True), good)
    with pytest.raises(ValueError):
        registry.get(name).make_config({"device": "tpu"})


def test_fireants_3d_smoke():
    """3D path: a small volume with a known smooth deformation."""
    shape = (24, 28, 26)
    vol = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(shape), 2.0).astype(np.float32)
    u_true = smooth_random_field(shape, 1.5, seed=2, sigma=5.0)
    moving = torch.tensor(vol)[None, None]
    fixed = warp(moving, u_true)
    result = _run(
        "fireants",
        Image.from_array(fixed[0, 0]),
        Image.from_array(moving[0, 0]),
        {"levels": (2, 1), "iterations": (40, 20)},
    )
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4), slice(4, -4))
    before = float(u_true[inner].norm(dim=1).mean())
    after = float((result.displacement - u_true)[inner].norm(dim=1).mean())
    assert after < 0.5 * before and _folding_percent(result.displacement) == 0.0


def test_fireants_auto_settings_name_the_schedule_it_runs():
    """``auto_settings`` (the Register page's note) is the auto preset resolved for the image: 3 levels for a
    1 mm brain, fewer for a small or thick-slice grid; nothing for a custom config."""
    from regcore.methods.classical.fireants_schedule import AUTO_SCHEDULES

    spec = registry.get("fireants")
    brain = spec.auto_settings(spec.make_config({}), (160, 192, 224), (1.0, 1.0, 1.0))
    assert brain == {"levels": (4, 2, 1), **AUTO_SCHEDULES[3]}
    small = spec.auto_settings(spec.make_config({}), (40, 40), (1.0, 1.0))
    assert small["levels"] == (1,) and small["iterations"] == AUTO_SCHEDULES[2]["iterations"][-1:]
    thick = spec.auto_settings(spec.make_config({}), (160, 192, 45), (1.0, 1.0, 5.0))
    assert thick["levels"] == (4, 2, 1)  # the 5 mm axis is shrunk less (pyramid.axis_factors), not skipped
    assert spec.auto_settings(spec.make_config({"preset": "custom"}), (64, 64), (1.0, 1.0)) == {}


def test_fireants_gradient_steps_are_smoother_than_adam_at_the_same_dice(shared_data):
    """ANTs SyN's step rule (the default) against FireANTs' Adam on held-out OASIS slices (one per axis): lower
    SDlogJ on every pair, mean Dice within 0.02 (on all 24 held-out pairs of ``benchmarks/dev_benchmark.py``
    it is 0.0065 higher; on these three, 0.013 lower)."""
    from regcore.data.slices import slice_pairs
    from regcore.metrics import evaluate

    pairs = [
        p
        for axis in (0, 1, 2)
        for p in slice_pairs(shared_data / "brain3d", "held_out", axes=(axis,), per_axis=1)
    ]
    spec = registry.get("fireants")
    scores = {}
    for rule in ("gradient", "adam"):
        scores[rule] = []
        for pair in pairs:
            result = spec.factory().register(pair.fixed, pair.moving, spec.make_config({"optimizer": rule}))
            e = evaluate(result, fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels)
            scores[rule].append((e["dice_mean"], e["sdlogj"]))
    for (_, smooth), (_, rough) in zip(scores["gradient"], scores["adam"]):
        assert smooth < rough, scores
    mean_dice = {rule: float(np.mean([d for d, _ in s])) for rule, s in scores.items()}
    assert mean_dice["gradient"] > mean_dice["adam"] - 0.02, mean_dice
