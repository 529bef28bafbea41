"""regcore.viz: array helpers (analytic + SimpleITK/skimage cross-checks) and figure contents."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from regcore import viz
from regcore.image import Geometry, Image


def test_checkerboard_alternates_tiles():
    f, m = np.zeros((8, 8)), np.ones((8, 8))
    cb = viz.checkerboard(f, m, 4)
    assert cb[0, 0] == 0 and cb[0, 4] == 1 and cb[4, 0] == 1 and cb[4, 4] == 0
    assert cb.mean() == pytest.approx(0.5)


def test_checkerboard_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        viz.checkerboard(np.zeros((4, 4)), np.zeros((4, 5)), 2)
    with pytest.raises(ValueError, match="tile must be >= 1"):
        viz.checkerboard(np.zeros((4, 4)), np.zeros((4, 4)), 0)


def test_checkerboard_3d_cubes_and_tensor_or_image_input():
    f, m = torch.zeros(4, 6, 8), torch.ones(4, 6, 8)
    cb = viz.checkerboard(f, m, 2)  # tensors in, numpy out (the one checkerboard for app, report, previews)
    assert isinstance(cb, np.ndarray) and cb.shape == (4, 6, 8)
    i, j, k = np.indices(cb.shape)
    np.testing.assert_array_equal(cb, ((i // 2 + j // 2 + k // 2) % 2).astype(float))
    img = Image.from_array(np.full((6, 6), 3.0, np.float32), Geometry.identity((6, 6)))
    assert viz.checkerboard(img, np.zeros((6, 6)), 3)[0, 0] == 3.0


def test_flicker_figure_alternates_the_two_normalised_images():
    a, b = np.zeros((6, 5)), np.ones((6, 5))
    b[0, 0] = 0.0
    fig = viz.flicker_figure(a, b, names=("fixed", "warped"), frames=4)
    assert [f.layout.title.text for f in fig.frames] == ["fixed", "warped", "fixed", "warped"]
    np.testing.assert_allclose(np.asarray(fig.frames[1].data[0].z), viz.normalise01(b).T)
    assert fig.layout.updatemenus[0].buttons[0].label == "Flicker"
    with pytest.raises(ValueError, match="same shape"):
        viz.flicker_figure(a, np.zeros((5, 5)))


def test_points_in_slice_and_slice_axes():
    pts = np.array([[1.0, 2.0, 5.0], [3.0, 4.0, 9.0]])
    inplane, keep = viz.points_in_slice(pts, 2, 5)
    np.testing.assert_array_equal(keep, [True, False])
    np.testing.assert_array_equal(inplane, [[1.0, 2.0]])
    inplane, keep = viz.points_in_slice(pts, 0, 3, tol=0.5)
    np.testing.assert_array_equal(inplane, [[4.0, 9.0]])
    two_d, keep = viz.points_in_slice(pts[:, :2], None, None)
    assert keep.all() and two_d.shape == (2, 2)
    assert viz.slice_axes(2, None) == (0, 1) and viz.slice_axes(3, 1) == (0, 2)
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        viz.slice_axes(3, None)


def test_extract_slice_and_slice_field():
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert np.array_equal(viz.extract_slice(vol, 1, 2), vol[:, 2, :])
    disp = np.stack([np.full((2, 3, 4), k) for k in range(3)])
    s = viz.slice_field(disp, 1, 0)
    assert s.shape == (2, 2, 4) and s[0].max() == 0 and s[1].min() == 2
    with pytest.raises(ValueError, match="index must be in"):
        viz.extract_slice(vol, 0, 5)
    with pytest.raises(ValueError, match="axis must be"):
        viz.extract_slice(vol, 3, 0)


def test_display_flips_follow_orientation_codes():
    assert viz.display_flips("RAS", (0, 1)) == (True, False)
    assert viz.display_flips("LPS", (0, 1)) == (False, True)
    assert viz.display_flips("LPS", (1, 2)) == (False, False)
    assert viz.display_flips(Geometry.identity((4, 4)).orientation_codes()) == (False, True)


def test_blend_and_difference_are_exact_at_the_ends():
    f = np.random.default_rng(0).random((6, 5))
    m = f**2
    blend0 = viz.blend_figure(f, m, 0.0).data[0].z
    assert np.allclose(blend0, viz.normalise01(f).T)
    same = viz.difference_figure(f, f).data[0].z
    assert np.allclose(same, 0)
    with pytest.raises(ValueError, match="alpha must be in"):
        viz.blend_figure(f, m, 1.5)


def test_grid_overlay_of_zero_field_draws_straight_lines_at_the_step():
    img = np.zeros((9, 13))
    fig = viz.grid_overlay_figure(img, np.zeros((2, 9, 13)), step=4)
    lines = fig.data[1]
    xs = np.array([v for v in lines.x if v is not None], dtype=float)
    # rows i = 0, 4, 8 each contribute 13 points at x = i; columns contribute 9 points each.
    assert set(np.unique(xs[: 3 * 13])) == {0.0, 4.0, 8.0}
    shifted = viz.grid_overlay_figure(img, np.ones((2, 9, 13)), step=4).data[1]
    assert np.allclose(np.array([v for v in shifted.x if v is not None], float), xs + 1)


def test_quiver_arrow_tips_are_x_plus_u():
    u = np.zeros((2, 8, 8))
    u[0] += 2.0
    u[1] -= 1.0
    fig = viz.quiver_figure(np.zeros((8, 8)), u, step=4)
    tips = fig.data[2]
    assert np.allclose(tips.x, np.array([0, 0, 4, 4]) + 2) and np.allclose(tips.y, np.array([0, 4, 0, 4]) - 1)


def test_jacobian_figure_marks_exactly_the_folded_voxels():
    jac = np.ones((6, 6))
    jac[1, 2] = -0.5
    jac[4, 4] = 0.0
    fig = viz.jacobian_figure(jac)
    folded = fig.data[1]
    assert sorted(zip(folded.x, folded.y)) == [(1, 2), (4, 4)]


def test_label_overlay_hover_names_and_transparent_background():
    lab = np.zeros((5, 5), int)
    lab[1:3, 1:3] = 7
    fig = viz.slice_figure(np.zeros((5, 5)), labels=lab, label_names={7: "hippocampus"})
    overlay = fig.data[1]
    z = np.asarray(overlay.z, dtype=float)
    assert np.isnan(z[0, 0]) and not np.isnan(z[1, 1])
    assert np.asarray(overlay.customdata)[1, 1] == "hippocampus"


def test_contours_match_skimage_marching_squares():
    from skimage.measure import find_contours

    lab = np.zeros((20, 20), int)
    lab[5:15, 4:12] = 1
    fig = viz.add_contours(go.Figure(), lab)
    ref = find_contours((lab == 1).astype(float), 0.5)
    xs = [v for v in fig.data[0].x if v is not None]
    assert len(xs) == sum(len(c) for c in ref)
    assert min(xs) == pytest.approx(4.5) and max(xs) == pytest.approx(14.5)


def test_landmark_tre_figure_requires_matching_points():
    with pytest.raises(ValueError, match="must match"):
        viz.landmark_tre_figure(np.zeros((4, 4)), np.zeros((3, 2)), np.zeros((2, 2)))
    fig = viz.landmark_tre_figure(np.zeros((4, 4)), [[0, 0]], [[3, 4]], ids=["a"])
    assert list(fig.data[1].x) == [0, 3, None]


def test_metric_charts_one_trace_per_run():
    fig = viz.metric_bar_figure({"a": {"x": 0.5, "y": 0.7}, "b": {"x": 0.6, "y": 0.8}})
    assert [t.name for t in fig.data] == ["a", "b"] and list(fig.data[1].y) == [0.6, 0.8]
    assert len(viz.metric_box_figure({"a": [0.1, 0.2]}).data) == 1
    with pytest.raises(ValueError, match="at least one run"):
        viz.metric_bar_figure({})


def test_as_array_accepts_image_tensor_and_array():
    img = Image.from_array(np.ones((3, 4)))
    assert viz.as_array(img).shape == (3, 4)
    assert viz.as_array(torch.zeros(2, 2)).shape == (2, 2)
    with pytest.raises(ValueError, match="2D slice"):
        viz.image_figure(np.zeros((2, 2, 2)))


def test_viz_does_not_import_streamlit():
    import subprocess
    import sys

    code = "import sys, regcore.viz, regcore.labs.tradeoff, regcore.labs.landscape; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
