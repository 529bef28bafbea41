"""Metrics: Dice/HD95/ASSD vs MONAI, TRE in mm, folding/SDlogJ/NDV, inverse consistency, intensity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from regcore.image import Geometry, Image, Landmarks
from regcore.metrics import (
    deformation_metrics,
    dice_per_label,
    folding_percent,
    intensity_metrics,
    inverse_consistency_error,
    label_overlap,
    mean_dice,
    ndv_percent,
    non_diffeomorphic_volume,
    sdlogj,
    surface_distances,
    target_registration_error,
)
from regcore.metrics.landmarks import sample_displacement
from regcore.spatial.jacobian import jacobian_determinant


def blob_labels(shape, seed=0, n_labels=3, sigma=3.0) -> np.ndarray:
    """Random smooth label map with labels 0..n_labels."""
    g = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(g.standard_normal(shape), sigma)
    edges = np.quantile(x, np.linspace(0, 1, n_labels + 2)[1:-1])
    return np.digitize(x, edges).astype(np.int64)


def identity_field(shape, dtype=torch.float64) -> torch.Tensor:
    axes = [torch.arange(s, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


# -- overlap ------------------------------------------------------------------------------


def test_dice_analytic_rectangles():
    a = np.zeros((20, 20), np.int64)
    b = np.zeros((20, 20), np.int64)
    a[2:12, 2:12] = 1  # 100 voxels
    b[7:17, 2:12] = 1  # 100 voxels, 50 shared
    assert dice_per_label(a, b) == {1: pytest.approx(0.5)}
    res = label_overlap(a, b, spacing=(2.0, 1.0))
    # surfaces are 5 rows apart along axis 0 at 2 mm/voxel for most surface voxels
    assert res["dice"]["1"] == pytest.approx(0.5)
    assert 0 < res["assd_mean_mm"] <= res["hd95_mean_mm"] <= 10.0 + 1e-9


@pytest.mark.parametrize("shape,spacing", [((40, 44), (1.0, 2.0)), ((24, 26, 22), (1.2, 0.8, 2.0))])
def test_hd95_and_assd_match_monai(shape, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    a = blob_labels(shape, 0)
    b = blob_labels(shape, 1)
    ours = label_overlap(a, b, spacing=spacing, label_names={1: "one", 2: "two", 3: "three"})
    for lab, name in ((1, "one"), (2, "two"), (3, "three")):
        pa = torch.tensor(b == lab)[None, None]  # monai: y_pred = warped, y = fixed
        pf = torch.tensor(a == lab)[None, None]
        hd = float(
            compute_hausdorff_distance(pa, pf, include_background=True, percentile=95, spacing=spacing)
        )
        asd = float(
            compute_average_surface_distance(pa, pf, include_background=True, symmetric=True, spacing=spacing)
        )
        assert ours["hd95"][name] == pytest.approx(hd, rel=1e-5), name
        assert ours["assd"][name] == pytest.approx(asd, rel=1e-5), name
        d_ab, d_ba = surface_distances(a == lab, b == lab, spacing)  # erosion-based path agrees
        assert ours["assd"][name] == pytest.approx(np.concatenate([d_ab, d_ba]).mean(), rel=1e-12)
    assert ours["dice_mean"] == pytest.approx(np.mean(list(ours["dice"].values())))


@pytest.mark.parametrize(
    "shape,spacing,radius",
    [((40, 44), (1.0, 2.0), 16), ((24, 26, 22), (1.2, 0.8, 3.0), 16), ((24, 26, 22), (1.0, 1.0, 1.0), 1)],
)
def test_compiled_shell_search_equals_kd_tree_distances(shape, spacing, radius):
    """Every surface point's distance equals scipy's cKDTree over the other surface; radius 1 leaves most
    points to the NaN -> KD-tree fallback."""
    from scipy.spatial import cKDTree

    from regcore.metrics import overlap_kernels
    from regcore.metrics.overlap import surface_points

    if not overlap_kernels.AVAILABLE:
        pytest.skip("numba not installed")
    a, b = blob_labels(shape, 4, n_labels=4), blob_labels(shape, 5, n_labels=4)
    b[b == 2] = 0  # label 2 only in a: no point of it may match anything
    b[tuple(slice(0, 3) for _ in shape)] = 9  # a far, small label of b's own
    a[tuple(slice(s - 3, s) for s in shape)] = 9
    sa, sb = surface_points(a), surface_points(b)
    labels = [lab for lab in sa if lab in sb]
    codes = {lab: k + 1 for k, lab in enumerate(labels)}
    points = np.concatenate([sa[lab] for lab in labels])
    point_codes = np.concatenate([np.full(len(sa[lab]), codes[lab]) for lab in labels])
    surface_codes = np.zeros(shape, np.int16)
    for lab in labels:
        surface_codes[tuple(sb[lab].T)] = codes[lab]
    got = overlap_kernels.nearest_surface_distances(points, point_codes, surface_codes, spacing, radius)
    sp = np.asarray(spacing)
    want = np.concatenate([cKDTree(sb[lab] * sp).query(sa[lab] * sp)[0] for lab in labels])
    found = ~np.isnan(got)
    assert found.sum() > 0.3 * len(got)  # the search resolves most points ...
    assert np.allclose(got[found], want[found], rtol=1e-12, atol=1e-12)  # ... exactly
    assert np.all(want[~found] > radius * min(spacing) - 1e-9)  # and leaves only points beyond its radius
    assert 9 in labels and np.isnan(got[point_codes == codes[9]]).all()  # opposite corners: beyond any radius


def test_far_points_brute_force_equals_kd_tree(monkeypatch):
    """The points beyond the shell search: every-pair distances equal cKDTree's, in one block or many."""
    from scipy.spatial import cKDTree

    from regcore.metrics import overlap

    rng = np.random.default_rng(4)
    points, targets = rng.uniform(0, 40, (120, 3)), rng.uniform(0, 40, (5000, 3))  # 3 row blocks
    want = cKDTree(targets).query(points)[0]
    np.testing.assert_allclose(overlap._nearest_distances(points, targets), want, rtol=1e-12)
    monkeypatch.setattr(overlap, "BRUTE_FORCE_PAIRS", 100)  # too many pairs: the KD-tree
    np.testing.assert_allclose(overlap._nearest_distances(points, targets), want, rtol=1e-12)


def test_compiled_label_counts_of_uint8_maps_equal_numpy_bincounts():
    from regcore.metrics.overlap import label_counts

    a = blob_labels((23, 31, 17), 8, n_labels=6).astype(np.uint8)
    b = blob_labels((23, 31, 17), 9, n_labels=6).astype(np.uint8)
    a[0, 0, 0], b[1, 1, 1] = 255, 200  # the top of the uint8 range
    compiled = label_counts(a, b)
    numpy_path = label_counts(a.astype(np.int64), b.astype(np.int64))
    for got, want in zip(compiled, numpy_path):
        np.testing.assert_array_equal(got, want)
    assert compiled[0].tolist()[-2:] == [200, 255]


@pytest.mark.parametrize("shape", [(23, 31), (23, 31, 17), (1, 12, 9), (9, 1, 7)])
def test_compiled_surface_voxels_equal_the_numpy_passes(shape):
    """uint8 maps take the compiled two-pass surface extraction: the same points, grouped by label in raster
    order, as the numpy edge passes on an int64 copy (labels touching the border and value 255 included)."""
    from regcore.metrics import overlap_kernels
    from regcore.metrics.overlap import surface_points

    if not overlap_kernels.AVAILABLE:
        pytest.skip("numba not installed")
    a = blob_labels(shape, 11, n_labels=5).astype(np.uint8)
    a[(0,) * len(shape)] = 255
    compiled, numpy_path = surface_points(a), surface_points(a.astype(np.int64))
    assert list(compiled) == list(numpy_path) and 255 in compiled
    for lab in compiled:
        np.testing.assert_array_equal(compiled[lab], numpy_path[lab])
    interior = np.zeros((5, 5, 5), np.uint8)
    interior[1:4, 1:4, 1:4] = 3
    assert len(surface_points(interior)[3]) == 26  # a 3x3x3 cube: every voxel but the centre


def test_hd95_and_assd_are_the_same_with_and_without_the_compiled_search(monkeypatch):
    from regcore.metrics import overlap_kernels

    a, b = blob_labels((20, 22, 18), 6, n_labels=5), blob_labels((20, 22, 18), 7, n_labels=5)
    compiled = label_overlap(a, b, spacing=(1.0, 0.7, 2.5))
    monkeypatch.setattr(overlap_kernels, "AVAILABLE", False)
    trees = label_overlap(a, b, spacing=(1.0, 0.7, 2.5))
    for key in ("hd95", "assd"):
        assert compiled[key] == pytest.approx(trees[key], rel=1e-12)


def test_absent_labels_give_nan_and_a_warning_never_an_error():
    a = blob_labels((30, 30), 2)
    a[0:3, 0:3] = 0
    b = a.copy()
    b[b == 3] = 0  # label 3 lost in the warped map
    b[0:3, 0:3] = 7  # label 7 only in the warped map
    res = label_overlap(a, b, label_names={3: "putamen"})
    assert res["dice"]["putamen"] == 0.0
    assert math.isnan(res["hd95"]["putamen"]) and math.isnan(res["assd"]["putamen"])
    assert res["absent"] == {"putamen": "warped", "7": "fixed"}
    assert any("putamen" in w and "warped" in w for w in res["warnings"])
    assert any("label 7" in w for w in res["warnings"])
    assert res["dice"]["1"] == 1.0 and res["hd95"]["1"] == 0.0
    assert res["dice_mean"] == pytest.approx(np.mean([1.0, 1.0, 0.0, 0.0]))
    assert not math.isnan(res["hd95_mean_mm"])
    empty = label_overlap(np.zeros((8, 8), int), np.zeros((8, 8), int))
    assert empty["dice"] == {} and math.isnan(empty["dice_mean"])
    assert mean_dice(a, b) == res["dice_mean"] and math.isnan(
        mean_dice(np.zeros((8, 8), int), np.zeros((8, 8), int))
    )
    scored = dice_per_label(a, b, labels=[1, 3, 9])  # 9 absent from both: NaN, left out of the mean
    assert scored[3] == 0.0 and math.isnan(scored[9])
    assert mean_dice(a, b, labels=[1, 3, 9]) == pytest.approx(0.5)


def test_label_inputs_accept_images_tensors_and_check_values():
    a = blob_labels((16, 18), 3)
    img = Image.from_array(a, spacing=(0.5, 0.5), is_labels=True, label_names={1: "x"})
    res = label_overlap(img, torch.tensor(a)[None, None])
    assert res["dice"]["x"] == 1.0
    assert label_overlap(a.astype(float), a)["dice_mean"] == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        label_overlap(-a, a)
    with pytest.raises(ValueError, match="integer label values"):
        label_overlap(a + 0.5, a)
    with pytest.raises(ValueError, match="same grid"):
        label_overlap(a, a[:, :-1])
    with pytest.raises(ValueError, match="spacing"):
        label_overlap(a, a, spacing=(1.0, -1.0))
    with pytest.raises(TypeError, match="Image, torch.Tensor or numpy"):
        label_overlap([[1]], a)


# -- landmarks ----------------------------------------------------------------------------


def oblique_geometry(shape=(20, 22, 18)) -> Geometry:
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # axes permuted + flipped
    return Geometry(shape, (2.0, 1.5, 3.0), (10.0, -5.0, 40.0), tuple(map(tuple, direction)))


def test_tre_zero_displacement_is_point_distance():
    g = oblique_geometry()
    fixed = Landmarks(np.array([[0.0, 0.0, 50.0], [3.0, 4.0, 60.0]]), ["a", "b"])
    moving = Landmarks(np.array([[3.0, 4.0, 60.0], [0.0, 0.0, 50.0], [9.0, 9.0, 9.0]]), ["b", "a", "c"])
    res = target_registration_error(fixed, moving)
    assert res["tre"] == {"a": 0.0, "b": 0.0}
    res = target_registration_error(fixed, Landmarks(moving.points + [3.0, 4.0, 0.0], moving.ids), None, g)
    assert res["mean_mm"] == pytest.approx(5.0) and res["median_mm"] == pytest.approx(5.0)
    assert res["std_mm"] == pytest.approx(0.0, abs=1e-12) and res["n"] == 2
    assert res["unmatched"] == ["c"] and res["warnings"]


def test_tre_follows_phi_through_the_fixed_geometry():
    g = oblique_geometry()
    idx = np.array([[3.0, 4.5, 5.0], [10.2, 7.0, 9.9], [15.5, 16.25, 2.0]])
    fixed = Landmarks(g.index_to_world_points(idx), ["1", "2", "3"])
    t = np.array([1.5, -2.0, 0.5])
    u = torch.tensor(t).view(1, 3, 1, 1, 1).expand(1, 3, *g.shape).clone()
    moving = Landmarks(g.index_to_world_points(idx + t), ["1", "2", "3"])
    assert target_registration_error(fixed, moving, u, g)["max_mm"] == pytest.approx(0.0, abs=1e-9)
    identity_tre = target_registration_error(fixed, moving)["mean_mm"]
    assert identity_tre == pytest.approx(np.linalg.norm(t * g.spacing))  # direction is a rotation
    # a linear field is interpolated exactly between voxels
    lin = 0.1 * identity_field(g.shape)
    np.testing.assert_allclose(sample_displacement(lin, idx), 0.1 * idx, atol=1e-12)


def test_tre_warns_outside_grid_and_validates():
    g = Geometry.identity((10, 10), 1.0)
    fixed = Landmarks(np.array([[50.0, 5.0], [2.0, 2.0]]), ["out", "in"])
    res = target_registration_error(fixed, fixed, torch.zeros(1, 2, 10, 10), g)
    assert any("outside" in w for w in res["warnings"])
    with pytest.raises(TypeError, match="fixed_geometry"):
        target_registration_error(fixed, fixed, torch.zeros(1, 2, 10, 10))
    with pytest.raises(ValueError, match="does not match the fixed grid"):
        target_registration_error(fixed, fixed, torch.zeros(1, 2, 10, 11), g)
    with pytest.raises(TypeError, match="Landmarks"):
        target_registration_error(np.zeros((2, 2)), fixed)


# -- deformation --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 18), (10, 11, 12)])
def test_identity_and_scaling_fields(shape):
    zero = torch.zeros(1, len(shape), *shape)
    assert deformation_metrics(zero) == {
        "folding_percent": 0.0,
        "sdlogj": 0.0,
        "ndv_percent": 0.0,
        "jacobian_min": 1.0,
        "jacobian_max": 1.0,
    }
    scale = 0.2 * identity_field(shape)  # phi = 1.2 x: det = 1.2^n everywhere
    m = deformation_metrics(scale)
    assert m["jacobian_min"] == pytest.approx(1.2 ** len(shape)) and m["sdlogj"] == pytest.approx(
        0.0, abs=1e-9
    )
    assert m["folding_percent"] == 0.0 and m["ndv_percent"] == 0.0
    flip = -2.0 * identity_field(shape)  # phi = -x: det = (-1)^n
    if len(shape) == 3:
        assert folding_percent(flip) == 100.0 and math.isnan(sdlogj(flip))


def test_ndv_catches_checkerboard_folding_that_central_differences_miss():
    """Liu et al. 2024's teaching example: a checkerboard looks fine to central differences."""
    shape = (16, 16)
    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    u = torch.zeros(1, 2, *shape, dtype=torch.float64)
    u[0, 0] = torch.tensor(0.75 * (-1.0) ** (i + j))
    interior = np.zeros(shape, bool)
    interior[1:-1, 1:-1] = True
    central = jacobian_determinant(u)[0].numpy()
    assert np.all(central[interior] == pytest.approx(1.0))  # central differences: no folding at all
    assert ndv_percent(u, mask=interior) > 1.0
    assert ndv_percent(0.2 * u) == 0.0  # a small checkerboard stays digitally diffeomorphic


def liu_reference_ndv(u: np.ndarray) -> np.ndarray:
    """Independent re-implementation of Liu et al.'s reference code (scipy.ndimage.correlate kernels)."""
    n = u.shape[0]
    shape = u.shape[1:]
    disp = np.pad(np.moveaxis(u, 0, -1), [(1, 1)] * n + [(0, 0)], mode="edge")
    grid = np.stack(np.meshgrid(*[np.arange(-1, s + 1) for s in shape], indexing="ij"), -1)
    trans = disp + grid
    kern = {"+": np.array([0, -1, 1.0]), "-": np.array([-1, 1.0, 0])}

    def det_of(columns):
        jac = np.stack(columns, axis=-1)  # (..., component, column)
        return np.linalg.det(jac)[(slice(1, -1),) * n]

    def along(k, axis):
        shape_k = [1] * (n + 1)
        shape_k[axis] = 3
        return ndimage.correlate(trans, k.reshape(shape_k), mode="nearest")

    dets = []
    import itertools

    for signs in itertools.product("+-", repeat=n):
        dets.append(det_of([along(kern[s], a) for a, s in enumerate(signs)]))
    if n == 3:

        def plane(offsets):  # phi(x + offsets) - phi(x)
            k = np.zeros((3, 3, 3, 1))
            k[1, 1, 1, 0] = -1
            k[tuple(1 + o for o in offsets) + (0,)] = 1
            return ndimage.correlate(trans, k, mode="nearest")

        dets.append(det_of([plane((-1, -1, 0)), plane((-1, 0, -1)), plane((0, -1, -1))]))
        dets.append(det_of([plane((1, 1, 0)), plane((0, 1, 1)), plane((1, 0, 1))]))
    w = 1 / 6 if n == 3 else 1 / 2
    return sum(-0.5 * np.minimum(d, 0) * w for d in dets)


@pytest.mark.parametrize("shape", [(14, 15), (9, 10, 11)])
def test_ndv_matches_reference_implementation(shape):
    g = np.random.default_rng(7)
    u = g.normal(0, 0.6, (len(shape), *shape))
    ours = non_diffeomorphic_volume(torch.tensor(u)[None])[0].numpy()
    ref = liu_reference_ndv(u)
    assert ref.sum() > 0
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_inverse_consistency_error_in_mm():
    shape = (12, 14, 10)
    t = torch.zeros(1, 3, *shape, dtype=torch.float64)
    t[:, 0], t[:, 2] = 1.0, 2.0
    exact = inverse_consistency_error(t, -t, spacing=(2.0, 1.0, 1.5))
    assert exact["max_mm"] == pytest.approx(0.0, abs=1e-12)
    off = inverse_consistency_error(t, torch.zeros_like(t), spacing=(2.0, 1.0, 1.5))
    assert off["mean_mm"] == pytest.approx(np.hypot(2.0, 3.0)) and off["p95_mm"] == pytest.approx(
        np.hypot(2.0, 3.0)
    )
    with pytest.raises(ValueError, match="spacing"):
        inverse_consistency_error(t, t, spacing=(1.0, 1.0))


# -- intensity ----------------------------------------------------------------------------


def test_intensity_metrics_vs_numpy_and_skimage():
    from skimage.metrics import structural_similarity

    g = np.random.default_rng(3)
    f = ndimage.gaussian_filter(g.random((40, 36)), 2)
    w = 0.7 * f + 0.3 * ndimage.gaussian_filter(g.random((40, 36)), 2)
    m = intensity_metrics(Image.from_array(f), torch.tensor(w))
    assert m["mse"] == pytest.approx(np.mean((f - w) ** 2))
    assert m["ssd"] == pytest.approx(np.sum((f - w) ** 2))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((f - w) ** 2)))
    assert m["ncc"] == pytest.approx(np.corrcoef(f.ravel(), w.ravel())[0, 1])
    ref = structural_similarity(
        f, w, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=f.max() - f.min()
    )
    assert m["ssim"] == pytest.approx(ref, abs=1e-6)  # Image.from_array stores float32
    mask = np.zeros(f.shape, bool)
    mask[:20] = True
    assert intensity_metrics(f, w, mask)["mse"] == pytest.approx(np.mean((f[:20] - w[:20]) ** 2))
    with pytest.raises(ValueError, match="same shape"):
        intensity_metrics(f, w[:-1])


def test_intensity_metrics_float32_volume_match_float64_reference():
    """float32 volumes are summed in float64 without a float64 copy: CT-like offsets (mean >> spread) too."""
    g = np.random.default_rng(4)
    f = (1000 + 50 * ndimage.gaussian_filter(g.random((48, 40, 36)), 2)).astype(np.float32)
    w = (0.8 * f + 0.2 * (1000 + 50 * g.random(f.shape))).astype(np.float32)
    f64, w64 = f.astype(np.float64), w.astype(np.float64)
    m = intensity_metrics(torch.from_numpy(f), torch.from_numpy(w))
    assert m["mse"] == pytest.approx(np.mean((f64 - w64) ** 2), rel=1e-6)
    assert m["ssd"] == pytest.approx(np.sum((f64 - w64) ** 2), rel=1e-6)
    assert m["ncc"] == pytest.approx(np.corrcoef(f64.ravel(), w64.ravel())[0, 1], rel=1e-6)
    assert math.isnan(intensity_metrics(np.ones((8, 8), np.float32), np.ones((8, 8), np.float32))["ncc"])
