"""regcore.labs: the computations behind the concept labs, checked analytically and against libraries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regcore.labs import diffeo, fiducials, landscape, phantoms, tradeoff, transforms


def test_rigid_displacement_preserves_distances_and_recovers_angle():
    u = transforms.rigid_displacement((31, 31), angle_deg=30, tx=2, ty=-1)
    ii, jj = np.meshgrid(np.arange(31.0), np.arange(31.0), indexing="ij")
    p = np.stack([ii + u[0], jj + u[1]], -1).reshape(-1, 2)
    x = np.stack([ii, jj], -1).reshape(-1, 2)
    r, _t = fiducials.kabsch(x, p)
    assert np.degrees(np.arctan2(r[1, 0], r[0, 0])) == pytest.approx(30, abs=1e-6)
    d = lambda a: np.linalg.norm(a[0] - a[-1])
    assert d(p) == pytest.approx(d(x))


def test_affine_displacement_rejects_non_positive_scale():
    with pytest.raises(ValueError, match="scale_x and scale_y must be > 0"):
        transforms.affine_displacement((8, 8), scale_x=0)


def test_warp_image_identity_and_shift():
    img = np.random.default_rng(0).random((10, 12))
    assert np.allclose(transforms.warp_image(img, np.zeros((2, 10, 12))), img)
    shifted = transforms.warp_image(img, transforms.rigid_displacement((10, 12), tx=1))
    assert np.allclose(shifted[:-1], img[1:])


def test_kabsch_matches_scipy_align_vectors_in_3d():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    src = rng.normal(size=(10, 3))
    rot = Rotation.from_euler("xyz", [20, -35, 50], degrees=True)
    dst = rot.apply(src) + np.array([1.0, 2.0, 3.0])
    r, t = fiducials.kabsch(src, dst)
    ref, _ = Rotation.align_vectors(dst - dst.mean(0), src - src.mean(0))
    assert np.allclose(r, ref.as_matrix(), atol=1e-8) and np.allclose(t, [1, 2, 3])


@pytest.mark.parametrize("dims", [2, 3])
def test_simulated_tre_matches_fitzpatrick_prediction(dims):
    rng = np.random.default_rng(dims)
    fid = rng.uniform(-30, 30, (6, dims))
    targets = np.zeros((3, dims))
    targets[:, 0] = [0, 40, 90]
    r = fiducials.simulate(fid, targets, 1.5, trials=3000, seed=2)
    assert np.allclose(r["tre_rms"], r["tre_predicted"], rtol=0.08)
    assert r["tre_rms"][2] > r["tre_rms"][0], "TRE grows away from the fiducials"
    assert r["fre_rms"] < 1.5, "FRE is below FLE (the fit absorbs part of the error)"
    with pytest.raises(ValueError, match="fle_rms must be >= 0"):
        fiducials.simulate(fid, targets, -1)


def test_landscape_costs_are_the_engines_losses():
    from regcore.losses import make_similarity

    lab = phantoms.phantom_labels(48)
    f, m = phantoms.phantom_image(lab), phantoms.phantom_image(lab, "T2-like", seed=1)
    tensor = lambda a: torch.tensor(a, dtype=torch.float32)[None, None]  # noqa: E731
    for metric in landscape.METRICS:
        expected = float(make_similarity(metric.lower(), 2)(tensor(f), tensor(m)))
        assert landscape.similarity_cost(f, m, metric) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="metric must be one of"):
        landscape.similarity_cost(f, m, "SSD")


def test_landscape_minimum_is_at_alignment_and_mse_fails_multimodal():
    lab = phantoms.phantom_labels(64)
    t1, t2 = phantoms.phantom_image(lab, "T1-like"), phantoms.phantom_image(lab, "T2-like", seed=1)
    values = np.arange(-8, 9, 2.0)
    _, mono = landscape.landscape(t1, t1, values=values)
    for metric in landscape.METRICS:
        assert values[np.argmin(mono[metric])] == 0, metric
    _, multi = landscape.landscape(t1, t2, values=values, metrics=("MI", "MSE"), normalise=False)
    assert values[np.argmin(multi["MI"])] == 0
    depth = lambda c: (c.max() - c.min()) / abs(c).max()  # 1 = the cost vanishes at its minimum
    assert depth(multi["MSE"]) < 0.6 < depth(multi["MI"]), "MSE keeps a large residual across contrasts"
    with pytest.raises(ValueError, match="kind must be"):
        landscape.landscape(t1, t1, kind="shear")


def test_coarse_levels_have_wider_basins():
    lab = phantoms.phantom_labels(96)
    img = phantoms.phantom_image(lab)
    values = np.linspace(-24, 24, 25)
    _, fine = landscape.landscape(img, img, values=values, metrics=("MSE",), level=0)
    _, coarse = landscape.landscape(img, img, values=values, metrics=("MSE",), level=2)
    assert (coarse["MSE"] < 0.5).sum() >= (fine["MSE"] < 0.5).sum()


def test_exp_removes_the_folding_of_a_velocity_used_directly():
    r = diffeo.compare((64, 64), amplitude=12.0, smoothness=4.0)
    assert r["direct"]["folding_percent"] > 0 and r["exp"]["folding_percent"] == 0
    assert r["exp"]["jacobian"].shape == (64, 64) and r["exp"]["min_jacobian"] > 0


def test_regularisation_weight_trades_folding_for_dice():
    loose, stiff = (
        tradeoff.register_with_weight(0.0, size=32, iterations=60),
        tradeoff.register_with_weight(30.0, size=32, iterations=60),
    )
    assert loose.folding_percent > stiff.folding_percent
    assert loose.roughness > stiff.roughness
    _fi, _mi, fl, ml = tradeoff.demo_pair(32)
    assert stiff.dice > tradeoff.mean_dice(fl, ml), "even a stiff registration improves on identity"
    with pytest.raises(ValueError, match="weight must be >= 0"):
        tradeoff.register_with_weight(-1.0)
