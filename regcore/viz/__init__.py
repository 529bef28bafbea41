"""Plotly figure builders for registration results: pure functions -> ``go.Figure``.

Display convention (every 2D panel here): a slice ``a[i, j]`` of tensor axes (p, q) with
p < q is drawn with axis p horizontal (x = i) and axis q vertical (y = j), so a voxel
index ``(i, j)`` is plotted at ``(x=i, y=j)`` and a displacement ``(u_p, u_q)`` (voxels,
fixed -> moving) is an arrow ``(dx=u_p, dy=u_q)``. Orientation is handled by reversing
plot axes (:func:`display_flips`), never by flipping data, so overlays stay in voxel units.
Never imports streamlit.

One module per kind of figure: :mod:`.colors`, :mod:`.slices`, :mod:`.panels`, :mod:`.comparisons`, :mod:`.fields`, :mod:`.charts`, :mod:`.layouts`, :mod:`.numbers`; every public name is
re-exported here (``from regcore import viz; viz.checkerboard_figure(...)``).
"""

from __future__ import annotations

from regcore.viz.charts import line_figure, loss_curve_figure, metric_bar_figure, metric_box_figure
from regcore.viz.colors import (
    FOLD_COLOR,
    PALETTE,
    DetJScale,
    detj_scale,
    label_color,
    label_colormap,
    label_legend_html,
    label_legend_rows,
)
from regcore.viz.comparisons import (
    before_after_difference_figures,
    blend_figure,
    checkerboard_figure,
    difference_figure,
    difference_limit,
    flicker_figure,
    signed_difference,
)
from regcore.viz.fields import (
    default_step,
    grid_overlay_figure,
    jacobian_figure,
    landmark_tre_figure,
    quiver_figure,
)
from regcore.viz.layouts import add_label_legend, panel_grid, registration_panels, triplanar_figure
from regcore.viz.numbers import METRIC_COLUMNS, MISSING, format_columns, format_number, metric_title
from regcore.viz.panels import (
    add_contours,
    add_heat_overlay,
    add_label_overlay,
    add_points,
    image_figure,
    slice_figure,
)
from regcore.viz.slices import (
    as_array,
    auto_window,
    checkerboard,
    display_flips,
    extract_slice,
    image_flips,
    magnitude,
    normalise01,
    plane_name,
    points_in_slice,
    slice_axes,
    slice_field,
)

__all__ = [
    "PALETTE",
    "FOLD_COLOR",
    "DetJScale",
    "detj_scale",
    "label_color",
    "label_colormap",
    "label_legend_html",
    "label_legend_rows",
    "before_after_difference_figures",
    "difference_limit",
    "signed_difference",
    "METRIC_COLUMNS",
    "MISSING",
    "format_columns",
    "format_number",
    "metric_title",
    "as_array",
    "auto_window",
    "extract_slice",
    "slice_field",
    "slice_axes",
    "points_in_slice",
    "display_flips",
    "checkerboard",
    "normalise01",
    "image_flips",
    "magnitude",
    "plane_name",
    "image_figure",
    "add_label_overlay",
    "add_contours",
    "add_points",
    "slice_figure",
    "add_heat_overlay",
    "checkerboard_figure",
    "blend_figure",
    "difference_figure",
    "flicker_figure",
    "default_step",
    "grid_overlay_figure",
    "quiver_figure",
    "jacobian_figure",
    "landmark_tre_figure",
    "metric_bar_figure",
    "metric_box_figure",
    "loss_curve_figure",
    "line_figure",
    "panel_grid",
    "add_label_legend",
    "triplanar_figure",
    "registration_panels",
]
