"""regcore.viz: array helpers (analytic + SimpleITK/skimage cross-checks) and figure contents."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from regcore import viz
from regcore.image import Geometry, Image
from regcore.viz.colors import colorscale_at


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
    arrows = fig.data[1]  # segments x -> x + u, separated by gaps; an arrowhead on each tip
    tips_x, tips_y = np.array(arrows.x[1::3], float), np.array(arrows.y[1::3], float)
    assert np.allclose(tips_x, np.array([0, 0, 4, 4]) + 2) and np.allclose(tips_y, np.array([0, 4, 0, 4]) - 1)
    assert list(arrows.marker.size[1::3]) == [9] * 4 and list(arrows.marker.size[0::3]) == [0] * 4
    assert arrows.marker.symbol == "arrow" and arrows.marker.angleref == "previous"
    assert arrows.marker.colorbar.title.text == "|u| (voxels)"
    assert np.allclose(arrows.marker.color[1::3], np.hypot(2.0, 1.0)), "colour = |u| in voxels, unscaled"
    assert viz.default_step((892, 660)) == 56 and viz.default_step((80, 96)) == 6


def test_jacobian_figure_paints_exactly_the_folded_voxels_in_the_folding_colour():
    jac = np.ones((6, 6))
    jac[1, 2] = -0.5
    jac[4, 4] = 0.0
    jac[2, 2], jac[3, 1] = 2.0, 0.25  # the strongest shrinkage sits at the end of the scale: not "folded"
    trace = viz.jacobian_figure(jac).data[0]
    z = np.asarray(trace.z, float).T  # back to (H, W)
    scale = [list(s) for s in trace.colorscale]
    colour = [colorscale_at(scale, (v - trace.zmin) / (trace.zmax - trace.zmin)) for v in z.ravel()]
    folded = {tuple(ij) for ij, c in zip(np.argwhere(np.ones_like(jac)), colour) if c == viz.FOLD_COLOR}
    assert folded == {(1, 2), (4, 4)}
    assert trace.colorbar.title.text == "det J" and "folded" in trace.colorbar.ticktext
    np.testing.assert_allclose(np.asarray(trace.customdata, float).T, jac), "hover shows the real det J"


def test_detj_scale_is_centred_at_one_and_symmetric_in_log():
    jac = np.array([[0.5, 1.0, 2.0], [4.0, 0.25, -1.0]])
    s = viz.detj_scale(jac)
    white = viz.colors.DETJ_STOPS[2][1]
    assert colorscale_at(s.colorscale, s.position(np.log2(1.0))) == white, "det J = 1 is white"
    assert s.limit == pytest.approx(2.0), "largest |log2 det J| of the unfolded voxels (4 and 1/4)"
    # halving and doubling are mirror images around white: same distance along the scale
    lo, hi = s.position(np.log2(0.5)), s.position(np.log2(2.0))
    assert s.position(0.0) - lo == pytest.approx(hi - s.position(0.0))
    assert colorscale_at(s.colorscale, lo).startswith("#") and colorscale_at(s.colorscale, lo) != white
    blue, red = (
        np.array(viz.colors.hex_rgb(colorscale_at(s.colorscale, lo))),
        np.array(viz.colors.hex_rgb(colorscale_at(s.colorscale, hi))),
    )
    assert blue[2] > blue[0] and red[0] > red[2], "shrinkage blue, growth red"
    assert colorscale_at(s.colorscale, s.position(s.fold_z)) == viz.FOLD_COLOR
    assert colorscale_at(s.colorscale, s.position(-s.limit)) == viz.colors.DETJ_STOPS[0][1], "max shrink blue"
    cmap = viz.colors.matplotlib_cmap(s.colorscale)  # the QA report's 256-level version keeps both apart
    assert np.allclose(cmap(s.position(s.fold_z))[:3], np.array(viz.colors.hex_rgb(viz.FOLD_COLOR)) / 255)
    assert not np.allclose(cmap(s.position(-s.limit))[:3], np.array(viz.colors.hex_rgb(viz.FOLD_COLOR)) / 255)
    used = {c for _, c in s.colorscale} - {viz.FOLD_COLOR}
    assert viz.FOLD_COLOR not in viz.PALETTE and viz.FOLD_COLOR not in used, (
        "folding colour means nothing else"
    )
    with pytest.raises(ValueError, match="limit must be"):
        viz.detj_scale(jac, limit=0)


def test_label_colour_is_a_function_of_the_value_only():
    assert viz.label_color(7) == viz.PALETTE[6] and viz.label_color(21) == viz.label_color(1)
    assert viz.label_colormap([0, 3, 7]) == {3: viz.label_color(3), 7: viz.label_color(7)}
    with pytest.raises(ValueError, match="0 is background"):
        viz.label_color(0)
    fixed = np.zeros((8, 8), int)
    fixed[1:3, 1:3], fixed[5:7, 5:7] = 2, 5
    moving = np.where(fixed == 2, 0, fixed)  # label 2 missing from moving: label 5 must keep its colour

    def overlay_colour(lab, value):
        trace = viz.slice_figure(np.zeros(lab.shape), labels=lab).data[1]
        z = np.asarray(trace.z, float).T
        pos = z[lab == value][0] / (trace.zmax - trace.zmin)
        return colorscale_at([list(s) for s in trace.colorscale], pos)

    assert overlay_colour(fixed, 5) == overlay_colour(moving, 5) == viz.label_color(5)
    assert overlay_colour(fixed, 2) == viz.label_color(2)

    def contour_colours(lab):
        return {
            t.name.split(":")[0].split()[-1]: t.line.color for t in viz.add_contours(go.Figure(), lab).data
        }

    assert contour_colours(fixed) == {"2": viz.label_color(2), "5": viz.label_color(5)}
    assert contour_colours(moving) == {"5": viz.label_color(5)}
    legend = viz.label_legend_html([5, 2, 0], {2: "hippo<campus"})
    assert legend.index("2&nbsp;hippo&lt;campus") < legend.index("5&nbsp;label 5"), "sorted, escaped"
    assert viz.label_color(2) in legend and viz.label_legend_html([0]) == ""


def test_before_and_after_difference_share_one_colour_range():
    rng = np.random.default_rng(0)
    f = rng.random((10, 12))
    m, w = np.roll(f, 3, 0), 0.9 * f + 0.1 * np.roll(f, 1, 0)
    before, after = viz.before_after_difference_figures(f, m, w)
    b, a = before.data[0], after.data[0]
    assert (b.zmin, b.zmax) == (a.zmin, a.zmax) and b.zmin == -b.zmax
    peak = max(np.abs(viz.signed_difference(f, m)).max(), np.abs(viz.signed_difference(f, w)).max())
    assert b.zmax == pytest.approx(peak), "the range covers both maps"
    assert b.colorbar.title.text == "difference" and b.showscale
    fig = viz.registration_panels(_result(f, m, w), show=("before", "after"))
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert heat[0].zmin == heat[1].zmin == pytest.approx(-peak)


def test_heat_overlay_has_a_titled_colour_bar():
    fig = viz.add_heat_overlay(viz.image_figure(np.zeros((4, 4))), np.ones((4, 4)), name="|u| (mm)")
    assert fig.data[1].showscale and fig.data[1].colorbar.title.text == "|u| (mm)"


def test_numbers_for_people():
    fmt = viz.format_number
    assert [fmt(v) for v in (0.912345, 22.7312, 1234.5, 0.05, -0.4567)] == [
        "0.912",
        "22.7",
        "1,234",
        "0.0500",
        "-0.457",
    ]
    assert fmt(None) == fmt(float("nan")) == viz.MISSING and fmt(8e-8) == "< 0.001" and fmt(0.0) == "0"
    assert fmt(np.int64(35)) == "35" and fmt("cpu") == "cpu"
    assert viz.metric_title("runtime_s") == "Runtime (s)" and viz.metric_title("max_level") == "Max level"
    import pandas as pd

    html = viz.format_columns(pd.DataFrame({"Mean Dice": [0.81234, None], "Device": ["cpu", None]})).to_html()
    assert "0.812" in html and "None" not in html and "nan" not in html and viz.MISSING in html
    styled = viz.format_columns(pd.DataFrame({"Runtime (s)": [None, 4.1512], "Dice": [0.5, 0.75]}))
    assert list(styled.data["Runtime (s)"]) == [viz.MISSING, "4.15"], "no null left for Streamlit to draw"
    assert styled.data["Dice"].dtype.kind == "f", "complete columns stay numbers (they sort as numbers)"


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


def _result(f, m, w):
    """A 2D RegistrationResult with images f, m, w and a zero displacement."""
    from regcore.methods.base import RegistrationResult

    imgs = [Image.from_array(a.astype(np.float32), Geometry.identity(a.shape)) for a in (f, m, w)]
    return RegistrationResult("test", *imgs, torch.zeros(1, 2, *f.shape))


def test_loss_curve_draws_losses_only_and_marks_pyramid_levels():
    history = [
        {"similarity": 1.0, "level": 0.0},
        {"similarity": 0.8, "level": 0.0},
        {"similarity": 0.5, "level": 1.0},
    ]
    fig = viz.loss_curve_figure(history)
    assert [t.name for t in fig.data] == ["similarity"], "the pyramid level is not a loss"
    assert [s.x0 for s in fig.layout.shapes] == [1.5] and fig.layout.annotations[0].text == "level 1"
    assert fig.layout.xaxis.title.text == "iteration" and fig.layout.yaxis.title.text == "loss"
    bar = viz.metric_bar_figure({"a": {"x": 0.5}})
    assert bar.layout.xaxis.title.text == "structure" and bar.layout.yaxis.title.text == "Dice"
    assert bar.layout.legend.y >= 1.0, "legend above the plot, clear of the tick labels"


def test_panels_with_labels_carry_a_legend_in_label_colours():
    f = np.random.default_rng(1).random((10, 12))
    lab = np.zeros((10, 12), int)
    lab[2:5, 2:5], lab[6:9, 6:9] = 4, 9
    fig = viz.registration_panels(
        _result(f, f, f), labels=lab, show=("fixed", "warped"), label_names={4: "a"}
    )
    legend = {t.name: t.marker.color for t in fig.data if t.showlegend is not False}
    assert legend == {"4 a": viz.label_color(4), "9 label 9": viz.label_color(9)}
    contours = {t.line.color for t in fig.data if t.type == "scatter" and t.mode == "lines"}
    assert contours == {viz.label_color(4), viz.label_color(9)}, "outlines in the same colours as the legend"


def test_image_panels_leave_no_plot_background_frame():
    """Streamlit's plotly theme pads the plot area by 8 px unless the figure sets ``margin.pad``: the black
    plot background then framed every image (a thick black border around det J and difference maps)."""
    panel = viz.jacobian_figure(np.ones((12, 10)))
    grid = viz.panel_grid([panel, viz.image_figure(np.zeros((12, 10)))])
    for fig in (panel, grid):
        assert fig.layout.margin.pad == 0
        assert fig.layout.plot_bgcolor == "#000"  # black only where there is no image
    assert tuple(panel.layout.xaxis.range) == (-0.5, 11.5) and tuple(panel.layout.yaxis.range) == (-0.5, 9.5)
