"""Pair API on the built-in samples: the ground truth is checked against landmarks, labels and
images; the deformation code against analytic cases and an independent scipy integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from regcore.data import deform, list_sample_datasets, sample_pair
from regcore.data.pairs import Pair
from regcore.data.samples import UnitSpec, build_unit
from regcore.image import Image
from regcore.spatial.svf import integrate_svf
from regcore.spatial.warp import warp


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    for spec in (UnitSpec("brain", 3, 4.0), UnitSpec("brain", 2, 1.0), UnitSpec("shapes", 2)):
        build_unit(spec, folder, subjects=2)
    return folder


PAIRS = [("brain", 3, 4.0), ("brain", 2, 1.0), ("shapes", 2, 1.0)]


def _dice(a: torch.Tensor, b: torch.Tensor, values) -> tuple[float, float]:
    """Mean per-label Dice and volume-weighted (overall) Dice over ``values``."""
    per, inter, total = [], 0.0, 0.0
    for v in values:
        x, y = a == v, b == v
        s = float(x.sum() + y.sum())
        if s:
            i = 2.0 * float((x & y).sum())
            per.append(i / s)
            inter, total = inter + i, total + s
    return float(np.mean(per)), inter / total


def _landmark_error(pair: Pair, u: torch.Tensor) -> np.ndarray:
    fixed_mm, moving_mm, _ = pair.fixed_landmarks.matched(pair.moving_landmarks)
    fv = pair.fixed.geometry.world_to_index_points(fixed_mm)
    mv = pair.moving.geometry.world_to_index_points(moving_mm)
    uv = np.stack([map_coordinates(c, fv.T, order=1, mode="nearest") for c in u[0].numpy()], axis=1)
    return np.linalg.norm(fv + uv - mv, axis=1)


@pytest.mark.parametrize("dataset,dims,res", PAIRS)
def test_true_displacement_maps_landmarks_onto_partners(root, dataset, dims, res):
    pair = sample_pair(dataset, dims, 0, 1, resolution_mm=res, root=root)
    assert pair.true_displacement.shape == (1, dims, *pair.fixed.shape)
    assert pair.fixed.geometry.same_grid(pair.moving.geometry)
    assert len(pair.fixed_landmarks) >= 10
    err = _landmark_error(pair, pair.true_displacement)
    none = _landmark_error(pair, torch.zeros_like(pair.true_displacement))
    assert err.max() < 0.5, err.max()
    assert none.mean() > 5 * err.max() + 0.3  # the pair is really deformed


@pytest.mark.parametrize("dataset,dims,res", PAIRS)
def test_true_displacement_reproduces_partner_labels(root, dataset, dims, res):
    pair = sample_pair(dataset, dims, 0, 1, resolution_mm=res, root=root)
    fixed = pair.fixed_labels.data[0]
    # border padding: subject label maps extend their edge labels (shapes fill the whole field of view)
    warped = warp(
        pair.moving_labels.data[None], pair.true_displacement, mode="nearest", padding_mode="border"
    )[0, 0]
    mean_dice, overall = _dice(fixed, warped, pair.label_names)
    mean_none, overall_none = _dice(fixed, pair.moving_labels.data[0], pair.label_names)
    assert overall > overall_none + 0.05 and mean_dice > mean_none
    # two nearest-neighbour resamplings bound what the exact transform can score (data card):
    # >= 0.95 where voxels are small relative to structures (1 mm slices, 1-voxel shapes)
    if res <= 1.0:
        assert overall >= 0.95, overall
    if (dataset, res) == ("brain", 1.0):
        assert mean_dice >= 0.95, mean_dice
    else:
        assert overall >= 0.8, overall


def test_true_displacement_aligns_intensities(root):
    pair = sample_pair("brain", 2, 0, 1, resolution_mm=1.0, root=root)
    f = pair.fixed.data[0].double()
    warped = warp(pair.moving.batch(), pair.true_displacement)[0, 0].double()
    ncc = lambda a, b: float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))  # noqa: E731
    assert ncc(f, warped) > 0.9
    assert ncc(f, warped) > ncc(f, pair.moving.data[0].double()) + 0.05


def test_multimodal_pair_has_inverted_contrast(root):
    pair = sample_pair("brain", 3, 0, 1, contrast="t2", resolution_mm=4.0, root=root)
    assert pair.modality == "t1/t2" and "t2" in pair.name
    names = {v: k for k, v in pair.label_names.items()}
    fl, ml = pair.fixed_labels.data[0], pair.moving_labels.data[0]
    f, m = pair.fixed.data[0], pair.moving.data[0]
    wm = lambda lab: (
        (lab == names["Left-Cerebral-White-Matter"]) | (lab == names["Right-Cerebral-White-Matter"])
    )  # noqa: E731
    csf = lambda lab: (lab == names["Left-Lateral-Ventricle"]) | (lab == names["Right-Lateral-Ventricle"])  # noqa: E731
    assert f[wm(fl)].mean() > f[csf(fl)].mean() + 0.1  # T1: WM bright
    assert m[csf(ml)].mean() > m[wm(ml)].mean() + 0.1  # T2-like: CSF bright
    mono = sample_pair("brain", 3, 0, 1, resolution_mm=4.0, root=root)
    assert torch.equal(mono.true_displacement, pair.true_displacement)


def test_same_subject_gives_identity_and_pair_fields(root):
    pair = sample_pair("shapes", 2, 1, 1, root=root)
    assert pair.true_displacement.abs().max() < 1e-4
    assert isinstance(pair.fixed, Image) and pair.fixed_labels.is_labels
    assert pair.summary()["ground_truth"] and pair.summary()["landmarks"] >= 10
    assert pair.meta["fixed_subject"] == "subject_01" and pair.label_names[1] == "shape_01"


def test_reverse_pair_is_the_inverse(root):
    ab = sample_pair("brain", 2, 0, 1, resolution_mm=1.0, root=root).true_displacement
    ba = sample_pair("brain", 2, 1, 0, resolution_mm=1.0, root=root).true_displacement
    composed = ab + warp(ba, ab)  # (phi_ba o phi_ab)(x) - x
    interior = composed[..., 10:-10, 10:-10]
    assert interior.norm(dim=1).max() < 0.05


def test_bad_arguments(root):
    with pytest.raises(ValueError, match="dataset must be 'brain' or 'shapes'"):
        sample_pair("lungs", root=root)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        sample_pair("brain", 4, root=root)
    with pytest.raises(ValueError, match=r"moving must be a subject index 0..1"):
        sample_pair("shapes", 2, 0, 7, root=root)
    with pytest.raises(ValueError, match=r"contrast for dataset 'shapes' must be one of \['synth'\]"):
        sample_pair("shapes", 2, contrast="t2", root=root)
    fixed = sample_pair("shapes", 2, root=root).fixed
    with pytest.raises(ValueError, match="true_displacement must have shape"):
        Pair("x", fixed, fixed, true_displacement=torch.zeros(1, 2, 3, 3))
    with pytest.raises(TypeError, match="Pair.moving must be an Image"):
        Pair("x", fixed, np.zeros((4, 4)))


def test_list_sample_datasets_is_cheap_and_descriptive():
    info = {d["name"]: d for d in list_sample_datasets()}
    assert set(info) == {"brain", "shapes"}
    assert info["brain"]["contrasts"] == ["t1", "t2"] and info["brain"]["dims"] == [2, 3]
    assert all(d["ground_truth"] and d["description"] for d in info.values())


# -- deformation code: analytic cases and an independent cross-check ---------------------------------
def _smooth_velocity(shape, peak, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, len(shape), *[4] * len(shape), generator=g)
    v = F.interpolate(
        coarse, size=shape, mode="bilinear" if len(shape) == 2 else "trilinear", align_corners=True
    )
    return v * peak / v.norm(dim=1).max()


def test_sample_data_integrator_matches_scipy_scaling_and_squaring():
    """The sample subjects' exp(v) is regcore.spatial.svf.integrate_svf; pin it to an independent scipy one."""
    v = _smooth_velocity((48, 40), 4.0)
    ours = integrate_svf(v, steps=6)[0].numpy().astype(np.float64)
    u = v[0].numpy().astype(np.float64) / 2**6
    grid = np.indices((48, 40), dtype=np.float64)
    for _ in range(6):  # independent implementation: scipy map_coordinates, edge-clamped
        pos = grid + u
        u = u + np.stack([map_coordinates(c, pos, order=1, mode="nearest") for c in u])
    np.testing.assert_allclose(ours, u, atol=1e-4)


def test_exp_of_negative_velocity_is_the_inverse():
    v = _smooth_velocity((40, 36, 32), 3.0, seed=1)
    fwd, inv = integrate_svf(v, deform.SQUARING_STEPS), integrate_svf(-v, deform.SQUARING_STEPS)
    err = (fwd + warp(inv, fwd))[..., 6:-6, 6:-6, 6:-6].norm(dim=1)
    assert err.mean() < 0.01 and err.max() < 0.1  # exp(-v) is an approximate inverse (|grad v| ~ 0.25 here)
    assert fwd.norm(dim=1).max() > 2.0


def test_affine_only_transform_and_constant_relative_displacement():
    spacing = (2.0, 1.0)
    affine = np.array([[1.0, 0.0, 4.0], [0.0, 1.0, -3.0]])  # pure translation in mm
    t = deform.SubjectTransform(np.zeros((2, 5, 5)), affine)
    w = t.forward_displacement((20, 30), spacing)
    np.testing.assert_allclose(w[0, 0].numpy(), 2.0, atol=1e-5)
    np.testing.assert_allclose(w[0, 1].numpy(), -3.0, atol=1e-5)
    other = torch.zeros_like(w)
    other[:, 0] = -1.5
    u, residual = deform.relative_displacement(w, other)  # psi_m^-1 o psi_f = translation by w - other
    np.testing.assert_allclose(u[0, 0].numpy(), 3.5, atol=1e-5)
    np.testing.assert_allclose(u[0, 1].numpy(), -3.0, atol=1e-5)
    assert residual < 1e-4
    with pytest.raises(ValueError, match="must have 2 entries"):
        t.forward_displacement((20, 30, 4), spacing)


def test_invert_points_solves_forward_map():
    w = integrate_svf(_smooth_velocity((32, 32), 3.0, seed=2), deform.SQUARING_STEPS)
    targets = torch.tensor([[10.0, 12.5], [20.2, 7.7], [16.0, 16.0]])
    x, residual = deform.invert_points(w, targets)
    back = x + deform.sample_field(w, x)
    np.testing.assert_allclose(back.numpy(), targets.numpy(), atol=1e-4)
    assert residual < 1e-4


def test_random_transform_is_deterministic_and_sized():
    a = deform.random_transform(3, (100.0, 120.0, 100.0), np.random.default_rng(5))
    b = deform.random_transform(3, (100.0, 120.0, 100.0), np.random.default_rng(5))
    np.testing.assert_array_equal(a.control_velocity_mm, b.control_velocity_mm)
    peak = np.linalg.norm(a.control_velocity_mm, axis=0).max()
    assert 3.0 - 1e-9 <= peak <= 5.0 + 1e-9
    with pytest.raises(ValueError, match="ndim must be 2 or 3"):
        deform.random_transform(4, (1.0,) * 4, np.random.default_rng(0))
