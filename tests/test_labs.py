"""regcore.labs: the computations behind the concept labs, checked analytically and against libraries;
then the Learn page as a user sees it (AppTest): trade-off record, shared colour ranges, axis titles."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
        options = {"bins": landscape.mi_bins(f.size)} if metric == "MI" else {}
        expected = float(make_similarity(metric.lower(), 2, **options)(tensor(f), tensor(m)))
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


@pytest.mark.parametrize("moving", ["T1-like", "T2-like"])
def test_coarser_levels_never_add_local_minima(moving):
    """The multi-resolution lab's promise, on its own phantom and shifts: each coarser level's curve
    has at most as many dips as the finer one, and the coarsest has one, at the true alignment."""
    lab = phantoms.phantom_labels(96)
    f, m = phantoms.phantom_image(lab), phantoms.phantom_image(lab, moving)
    metrics = landscape.METRICS if moving == "T1-like" else ("MI",)  # MSE/NCC are not multimodal
    curves = [
        landscape.landscape(f, m, values=landscape.LAB_SHIFTS, metrics=metrics, level=lv)[1]
        for lv in range(4)
    ]
    for metric in metrics:
        counts = [landscape.count_local_minima(c[metric]) for c in curves]
        assert counts == sorted(counts, reverse=True) and counts[-1] == 1, (metric, counts)
        assert landscape.LAB_SHIFTS[np.argmin(curves[-1][metric])] == 0, metric


def test_mi_bins_follow_the_voxel_count_and_minima_are_counted():
    assert [landscape.mi_bins(n) for n in (96**2, 12**2, 3, 10**6)] == [21, 5, 4, 32]
    assert landscape.count_local_minima([3, 1, 2, 0, 5]) == 2
    assert landscape.count_local_minima([0, 1, 2]) == 0
    with pytest.raises(ValueError, match="n_voxels must be >= 1"):
        landscape.mi_bins(0)


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


def test_sweep_optimises_each_weight_as_a_separate_run_would():
    together = tradeoff.sweep((0.0, 30.0), size=24, iterations=20)
    alone = [tradeoff.register_with_weight(w, size=24, iterations=20) for w in (0.0, 30.0)]
    for a, b in zip(together, alone):
        assert a.weight == b.weight and np.allclose(a.displacement, b.displacement, atol=1e-4)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        tradeoff.sweep(())


def test_lab_adam_takes_the_same_steps_as_torch_adam():
    from regcore.labs.adam import Adam

    target = torch.linspace(-2, 3, 7)
    ours, ref = torch.zeros(7, requires_grad=True), torch.zeros(7, requires_grad=True)
    opt, ref_opt = Adam(ours, lr=0.3), torch.optim.Adam([ref], lr=0.3)
    for _ in range(6):
        for p, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            ((p - target) ** 4).sum().backward()
            o.step()
    assert torch.allclose(ours, ref, atol=1e-6) and not torch.allclose(ours, torch.zeros(7))
    with pytest.raises(ValueError, match="no gradient"):
        opt.zero_grad()
        opt.step()


# --- the Learn page (pages/learn.py) ---

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def learn():
    """The Learn page (AppTest), opened once for this module's page tests."""
    app_test = pytest.importorskip("streamlit.testing.v1").AppTest
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        yield app_test.from_file(str(ROOT / "pages" / "learn.py"), default_timeout=240).run()
    finally:
        os.chdir(old)


def open_lab(at, lab: str) -> dict[str, dict]:
    """Switch to ``lab``; -> {chart key: plotly spec} of what it drew."""
    at.segmented_control(key="learn_lab").set_value(lab).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    return charts(at)


def charts(at) -> dict[str, dict]:
    return {e.proto.id.split("-", 2)[-1]: json.loads(e.proto.spec) for e in at.get("plotly_chart")}


def colour_range(spec: dict) -> tuple[float, float]:
    return spec["data"][0]["zmin"], spec["data"][0]["zmax"]


def test_tradeoff_keeps_every_lambda_visited_sorted(learn):
    open_lab(learn, "Regularisation trade-off")
    for w in (30.0, 0.3, 3.0, 0.0):  # slide up, then back down
        learn.select_slider(key="lab_r_w").set_value(w).run()
    curve = charts(learn)["lab_r_curve"]["data"][0]
    assert curve["x"] == ["0", "0.3", "1", "3", "30"], "every lambda tried stays, in lambda order"
    assert len(curve["y"]) == 5


def test_regularisation_det_j_keeps_one_range_across_lambdas(learn):
    open_lab(learn, "Regularisation trade-off")
    learn.select_slider(key="lab_r_w").set_value(0.0).run()
    loose = charts(learn)["lab_r_jac"]
    learn.select_slider(key="lab_r_w").set_value(30.0).run()
    stiff = charts(learn)["lab_r_jac"]
    assert colour_range(loose) == colour_range(stiff)
    assert "folded" in loose["data"][0]["colorbar"]["ticktext"], "folding has its own colour on the bar"
    assert "boxed" not in loose["layout"]["title"]["text"]


def test_before_after_panels_share_colour_ranges(learn):
    diffeo = open_lab(learn, "Diffeomorphisms and folding")
    assert colour_range(diffeo["lab_d_jac_direct"]) == colour_range(diffeo["lab_d_jac_exp"])
    assert colour_range(diffeo["lab_d_grid_direct"]) == colour_range(diffeo["lab_d_grid_exp"])
    similarity = open_lab(learn, "Similarity landscapes")
    assert colour_range(similarity["lab_s_f"]) == colour_range(similarity["lab_s_m"])


@pytest.mark.parametrize(
    "lab",
    [
        "Transformations",
        "Similarity landscapes",
        "Regularisation trade-off",
        "Diffeomorphisms and folding",
        "Multi-resolution",
        "FLE / FRE / TRE",
    ],
)
def test_every_lab_chart_has_axis_titles(learn, lab):
    for key, spec in open_lab(learn, lab).items():
        layout = spec["layout"]
        if layout.get("xaxis", {}).get("visible") is False:
            continue  # an image panel: no axes to title
        for axis in ("xaxis", "yaxis"):
            assert layout.get(axis, {}).get("title", {}).get("text"), (lab, key, axis)


def test_multiresolution_caption_reports_one_minimum_per_level(learn):
    open_lab(learn, "Multi-resolution")
    learn.select_slider(key="lab_m_level").set_value(3).run()
    learn.radio(key="lab_m_metric").set_value("MI").run()
    caption = next(c.value for c in learn.caption if "Local minima" in c.value)
    assert caption.count(": 1") == 4, caption
