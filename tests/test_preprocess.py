"""regcore.preprocess: resampling through physical space (cross-checked with SimpleITK),
normalisation, crop/pad, histogram matching and pair checks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import smooth_random_field
from test_io import oblique_geometry

from regcore.image import Geometry, Image
from regcore.io import load_image, save_image
from regcore.preprocess import (
    NormaliseMethod,
    check_pair,
    crop_or_pad,
    histogram_match,
    normalise,
    resample_to,
)


def to_sitk(image: Image) -> sitk.Image:
    arr = image.numpy()
    s = sitk.GetImageFromArray(np.ascontiguousarray(arr.T))
    g = image.geometry
    s.SetSpacing(g.spacing)
    s.SetOrigin(g.origin)
    s.SetDirection(tuple(g.direction_matrix.reshape(-1)))
    return s


def sitk_resample(image: Image, reference: Geometry, nearest: bool) -> np.ndarray:
    ref = sitk.Image([int(s) for s in reference.shape], sitk.sitkFloat32)
    ref.SetSpacing(reference.spacing)
    ref.SetOrigin(reference.origin)
    ref.SetDirection(tuple(reference.direction_matrix.reshape(-1)))
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(to_sitk(image), ref, sitk.Transform(), interp, 0.0)).T


def smooth_image(geometry: Geometry, seed: int = 0) -> Image:
    field = smooth_random_field(geometry.shape, magnitude=1.0, seed=seed, sigma=2.0)[0, 0]
    return Image.from_array(field + 2.0, geometry, name="smooth")


CASES = {
    "3d": (
        oblique_geometry((20, 22, 18), (1.0, 1.3, 1.6), (0.0, 5.0, -3.0), (0.2, 0.1, -0.3)),
        oblique_geometry((17, 25, 21), (1.4, 0.9, 1.1), (2.0, 1.0, -6.0), (-0.4, 0.3, 0.2)),
    ),
    "2d": (
        oblique_geometry((40, 36), (0.8, 1.1), (3.0, -2.0), (0.3,)),
        oblique_geometry((33, 45), (1.2, 0.7), (-4.0, 1.0), (-0.5,)),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_resample_matches_simpleitk(case):
    source, reference = CASES[case]
    img = smooth_image(source)
    ours = resample_to(img, reference)
    assert ours.geometry == reference and ours.data.dtype == torch.float32
    theirs = sitk_resample(img, reference, nearest=False)
    inside = theirs != 0
    assert 0.3 < inside.mean() < 1.0  # partly outside: the default value path is exercised
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4)

    labels = Image.from_array((img.numpy() > 2.0).astype(np.int64) * 3, source, is_labels=True)
    lab = resample_to(labels, reference)
    assert lab.is_labels and lab.data.dtype == torch.int64
    assert set(np.unique(lab.numpy())) <= {0, 3}
    np.testing.assert_array_equal(lab.numpy(), sitk_resample(labels, reference, nearest=True))


@pytest.mark.parametrize("axis", [0, 2])
def test_resample_onto_a_single_slice_reference(axis):
    """A reference with a size-1 axis (one oblique slice of a volume) matches SimpleITK."""
    source, reference = CASES["3d"]
    img = smooth_image(source)
    index = [0, 0, 0]
    index[axis] = 8
    shape = list(reference.shape)
    shape[axis] = 1
    ref = replace(reference, shape=tuple(shape), origin=tuple(reference.index_to_world_points([index])[0]))
    theirs = sitk_resample(img, ref, nearest=False)
    assert (theirs != 0).mean() > 0.2
    np.testing.assert_allclose(resample_to(img, ref).numpy(), theirs, atol=1e-4)


def test_resample_a_single_slice_volume_fills_only_its_slab():
    """A 3D image one voxel thick (e.g. a thick 2D acquisition) covers only [-0.5, 0.5) slice."""
    source = oblique_geometry((20, 22, 1), (1.0, 1.0, 4.0), (0.0, 5.0, -3.0), (0.2, 0.1, -0.3))
    img = Image.from_array(np.random.default_rng(5).uniform(1, 2, source.shape), source)
    reference = replace(CASES["3d"][0], origin=(0.0, 5.0, -3.0))
    theirs = sitk_resample(img, reference, nearest=False)
    ours = resample_to(img, reference).numpy()
    assert 0.0 < (theirs != 0).mean() < 0.3
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_nearest_and_inside_ties_round_like_simpleitk():
    """At 1.5x the spacing many samples fall exactly on half voxels; ITK rounds those up."""
    source = Geometry.identity((21, 18, 15), 1.0)
    reference = Geometry((14, 12, 11), (1.5, 1.5, 1.5), (-0.75, 0.0, 0.0), tuple(map(tuple, np.eye(3))))
    values = np.random.default_rng(2).integers(1, 50, source.shape)
    labels = Image.from_array(values, source, is_labels=True)
    ours = resample_to(labels, reference).numpy()
    np.testing.assert_array_equal(ours, sitk_resample(labels, reference, nearest=True))
    assert (ours == 0).any()  # some reference voxels lie outside the source: default value


def test_resample_identity_default_and_validation():
    g = CASES["3d"][0]
    img = smooth_image(g)
    assert resample_to(img, g) is img
    far = replace(g, origin=(1000.0, 1000.0, 1000.0))
    out = resample_to(img, far, default=-7.0)
    assert torch.all(out.data == -7.0)
    with pytest.raises(ValueError, match="reference is 2D but image 'smooth' is 3D"):
        resample_to(img, CASES["2d"][0])
    with pytest.raises(ValueError, match="mode must be 'linear' or 'nearest', got 'cubic'"):
        resample_to(img, CASES["3d"][1], mode="cubic")
    with pytest.raises(TypeError, match="reference must be a Geometry"):
        resample_to(img, img)
    labels = Image.from_array(np.ones(g.shape, np.int64), g, is_labels=True)
    with pytest.raises(ValueError, match="default must be an integer"):
        resample_to(labels, far, default=0.5)
    # Multi-channel images resample channel by channel.
    two = Image(torch.cat([img.data, 2 * img.data]), g)
    out2 = resample_to(two, CASES["3d"][1])
    torch.testing.assert_close(out2.data[1], 2 * resample_to(img, CASES["3d"][1]).data[0])


def test_resample_undoes_a_simpleitk_reorientation_of_real_brain(tmp_path, shared_data):
    """Permute + flip the real OASIS brain with SimpleITK (physical space preserved), save it,
    load both, resample the reoriented copy onto the original grid: the data must come back."""
    path = shared_data / "brain3d/images/OASIS_OAS1_0455_MR1.nii.gz"
    original = load_image(path)
    s = sitk.ReadImage(str(path))[20:140, 30:170, 40:190]  # crop keeps it fast; still real data
    reoriented = sitk.Flip(sitk.PermuteAxes(s, [2, 0, 1]), [True, False, True])
    sitk.WriteImage(reoriented, str(tmp_path / "reoriented.mha"))
    moved = load_image(tmp_path / "reoriented.mha")
    assert moved.geometry.orientation_codes() != original.geometry.orientation_codes()
    back = resample_to(moved, original.geometry)
    crop = original.numpy()[20:140, 30:170, 40:190]
    np.testing.assert_allclose(back.numpy()[20:140, 30:170, 40:190], crop, atol=1e-4)  # float32 grid
    assert np.all(np.delete(back.numpy(), np.s_[20:140], axis=0) == 0)  # outside the crop: default
    # A different spacing: halve the resolution with SimpleITK, then compare our resampling.
    coarse = crop_or_pad(original, (80, 96, 112))
    ref2 = replace(coarse.geometry, shape=(40, 48, 56), spacing=(2.0, 2.0, 2.0))
    np.testing.assert_allclose(
        resample_to(coarse, ref2).numpy(), sitk_resample(coarse, ref2, False), atol=1e-5
    )


def test_normalise_methods():
    g = Geometry.identity((30, 31, 32))
    rng = np.random.default_rng(0)
    arr = rng.gamma(2.0, 50.0, g.shape).astype(np.float32)
    arr[:10] = 0.0
    img = Image.from_array(arr, g)
    mm = normalise(img, "minmax").numpy()
    assert mm.min() == pytest.approx(0.0) and mm.max() == pytest.approx(1.0)
    z = normalise(img, NormaliseMethod.ZSCORE).numpy()
    assert z.mean() == pytest.approx(0.0, abs=1e-4) and z.std() == pytest.approx(1.0, abs=1e-4)
    lo, hi = np.percentile(arr, [2, 98])
    np.testing.assert_allclose(
        normalise(img, "percentile", percentiles=(2, 98)).numpy(),
        (np.clip(arr, lo, hi) - lo) / (hi - lo),
        atol=1e-5,
    )
    fg = normalise(img, "zscore", foreground=True).numpy()
    fg_vals = arr[arr != 0]
    np.testing.assert_allclose(fg[arr != 0], (fg_vals - fg_vals.mean()) / fg_vals.std(), atol=1e-4)
    assert np.all(fg[:10] == 0)
    mask = np.zeros(g.shape, bool)
    mask[15:] = True
    sub = arr[15:]
    np.testing.assert_allclose(
        normalise(img, "minmax", mask=mask).numpy(), (arr - sub.min()) / (sub.max() - sub.min()), atol=1e-5
    )


def test_normalise_validation():
    img = Image.from_array(np.ones((4, 5)))
    with pytest.raises(ValueError, match="method must be one of .*got 'l2'"):
        normalise(img, "l2")
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        normalise(img, "percentile", percentiles=(99, 1))
    with pytest.raises(ValueError, match="cannot normalise label map"):
        normalise(Image.from_array(np.ones((4, 5)), is_labels=True), "minmax")
    with pytest.raises(ValueError, match=r"mask must have spatial shape \(4, 5\)"):
        normalise(img, "minmax", mask=np.ones((5, 4), bool))
    with pytest.raises(ValueError, match="no voxels selected"):
        normalise(Image.from_array(np.zeros((4, 5))), "minmax", foreground=True)
    with pytest.raises(TypeError, match="image must be a regcore Image"):
        normalise(np.ones((4, 5)), "minmax")


@pytest.mark.parametrize("case", CASES)
def test_crop_or_pad_keeps_world_positions(case):
    g = CASES[case][0]
    img = smooth_image(g)
    new_shape = tuple(
        s + (5 if k % 2 == 0 else -6) for k, s in enumerate(g.shape)
    )  # pad some axes, crop others
    out = crop_or_pad(img, new_shape)
    assert out.shape == new_shape and out.geometry.spacing == g.spacing
    # Same values as resampling onto the new grid through physical space (voxel centres coincide).
    np.testing.assert_allclose(out.numpy(), resample_to(img, out.geometry, mode="nearest").numpy(), atol=1e-6)
    np.testing.assert_allclose(
        crop_or_pad(crop_or_pad(img, tuple(s + 4 for s in g.shape)), g.shape).numpy(), img.numpy()
    )
    with pytest.raises(ValueError, match="shape must be"):
        crop_or_pad(img, (10,))


def test_histogram_match_recovers_a_monotone_intensity_change():
    g = Geometry.identity((40, 40, 40))
    ref = smooth_image(g, seed=1)
    changed = ref.with_data(torch.exp(ref.data) * 30.0 + 100.0)  # monotone, very different range
    matched = histogram_match(changed, ref, threshold_at_mean=False, match_points=15)
    r, m = ref.numpy(), matched.numpy()
    span = r.max() - r.min()
    qs = [5, 25, 50, 75, 95]
    np.testing.assert_allclose(np.percentile(m, qs), np.percentile(r, qs), atol=0.02 * span)
    before = np.abs(np.percentile(changed.numpy(), qs) - np.percentile(r, qs)).max()
    assert before > 50 * span  # the test is not trivially satisfied
    with pytest.raises(ValueError, match="needs intensity images"):
        histogram_match(Image.from_array(np.ones((4, 5)), is_labels=True), ref)


def test_check_pair_warnings():
    g = CASES["3d"][0]
    img = smooth_image(g)
    assert check_pair(img, img) == []
    coarse = Image.from_array(
        np.ones((10, 11, 9), np.float32) * 2.5,
        replace(g, shape=(10, 11, 9), spacing=tuple(2.5 * s for s in g.spacing)),
    )
    warnings = " | ".join(check_pair(img, coarse))
    assert "different voxel grids" in warnings and "voxel sizes differ by 2.5x" in warnings
    # Same spacings in another axis order: differs along world axes, so it warns.
    d = np.zeros((3, 3))
    d[[1, 2, 0], [0, 1, 2]] = 1.0
    aniso = Image.from_array(
        np.ones((20, 22, 18)), Geometry((20, 22, 18), (1.0, 1.0, 3.0), g.origin, tuple(map(tuple, np.eye(3))))
    )
    permuted = Image.from_array(
        np.ones((20, 22, 18)), Geometry((20, 22, 18), (1.0, 1.0, 3.0), g.origin, tuple(map(tuple, d)))
    )
    assert any("voxel sizes differ by 3.0x" in w for w in check_pair(aniso, permuted))
    assert not any("voxel sizes" in w for w in check_pair(aniso, aniso))
    flipped = Image(img.data, replace(g, direction=tuple(map(tuple, -g.direction_matrix))))
    assert any("different orientations" in w for w in check_pair(img, flipped))
    far = Image(img.data, replace(g, origin=(500.0, 0.0, 0.0)))
    assert any("do not overlap" in w for w in check_pair(img, far))
    bright = img.with_data(img.data * 1000.0)
    assert any("intensity ranges differ" in w for w in check_pair(img, bright))
    assert check_pair(img, Image.from_array(np.ones((4, 5)))) == [
        "fixed is 3D and moving is 2D: both must be 2D or both 3D"
    ]
    with pytest.raises(TypeError, match="moving must be a regcore Image"):
        check_pair(img, "moving.nii.gz")


def test_saved_then_loaded_pair_is_consistent(tmp_path):
    fixed_g, moving_g = CASES["3d"]
    moving = smooth_image(moving_g)
    path = save_image(moving, tmp_path / "m.nii.gz")
    loaded = load_image(path)
    np.testing.assert_allclose(
        resample_to(loaded, fixed_g).numpy(), resample_to(moving, fixed_g).numpy(), atol=1e-5
    )


@pytest.mark.parametrize("shape", [(5, 7, 2), (6, 4, 9), (8, 3)])
def test_separable_affine_grid_equals_torch_affine_grid(shape):
    from regcore.preprocess import _affine_grid

    n = len(shape)
    theta = torch.tensor(np.random.default_rng(n).normal(size=(n, n + 1)), dtype=torch.float64)
    expected = torch.nn.functional.affine_grid(theta[None], [1, 1, *shape], align_corners=True)
    torch.testing.assert_close(_affine_grid(theta, shape, "cpu", torch.float64), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resample_on_cuda_matches_cpu():
    source, reference = CASES["3d"]
    img = smooth_image(source)
    gpu = resample_to(img.to("cuda"), reference)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.data.cpu(), resample_to(img, reference).data, atol=1e-5, rtol=0)
