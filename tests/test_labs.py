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


def test_mutual_information_matches_sklearn():
    from sklearn.metrics import mutual_info_score
    rng = np.random.default_rng(0)
    a = rng.integers(0, 8, 5000).astype(float)
    b = (a + rng.integers(0, 3, 5000)) % 8
    ours = landscape.mutual_information(a, b, bins=8)
    assert ours == pytest.approx(mutual_info_score(a.astype(int), b.astype(int)), rel=1e-9)


def test_landscape_minimum_is_at_alignment_and_mse_fails_multimodal():
    lab = phantoms.phantom_labels(64)
    t1, t2 = phantoms.phantom_image(lab, "T1-like"), phantoms.phantom_image(lab, "T2-like", seed=1)
    values = np.arange(-8, 9, 2.0)
    _, mono = landscape.landscape(t1, t1, values=values)
    for metric in landscape.METRICS:
        assert values[np.argmin(mono[metric])] == 0, metric
    _, multi = landscape.landscape(t1, t2, values=values, metrics=("MI", "MSE"), normalise=False)
    assert values[np.argmin(multi["MI"])] == 0
    depth = lambda c: (c.max() - c.min()) / abs(c).max()   # 1 = the cost vanishes at its minimum
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


def test_scaling_and_squaring_matches_monai_and_removes_folding():
    monai_blocks = pytest.importorskip("monai.networks.blocks")
    v = diffeo.random_velocity((48, 48), amplitude=10.0, smoothness=4.0)
    ours = diffeo.scaling_and_squaring(v, steps=7)
    ref = monai_blocks.DVF2DDF(num_steps=7, mode="bilinear", padding_mode="border")(v)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert torch.allclose(ours[inner], ref[inner], atol=0.05)
    r = diffeo.compare((64, 64), amplitude=12.0, smoothness=4.0)
    assert r["direct"]["folding_percent"] > 0 and r["exp"]["folding_percent"] == 0


def test_scaling_and_squaring_rejects_bad_input():
    with pytest.raises(ValueError, match="velocity must be"):
        diffeo.scaling_and_squaring(torch.zeros(2, 8, 8))


def test_regularisation_weight_trades_folding_for_dice():
    loose, stiff = tradeoff.register_with_weight(0.0, size=32, iterations=60), \
        tradeoff.register_with_weight(30.0, size=32, iterations=60)
    assert loose.folding_percent > stiff.folding_percent
    assert loose.roughness > stiff.roughness
    _fi, _mi, fl, ml = tradeoff.demo_pair(32)
    assert stiff.dice > tradeoff.mean_dice(fl, ml), "even a stiff registration improves on identity"
    with pytest.raises(ValueError, match="weight must be >= 0"):
        tradeoff.register_with_weight(-1.0)
