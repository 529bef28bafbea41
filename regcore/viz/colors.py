"""Colours shared by every figure: the label colour table, the det J scale and the folding colour.

Label colours are a function of the label VALUE only (:func:`label_color`): the same structure has
the same colour on fixed, moving, warped, contours, the QA report and notebooks, whatever other labels
an image holds. The det J scale (:func:`detj_scale`) is diverging in log2(det J), centred at det J = 1
(white), blue below (shrinkage), red above (growth); folded voxels (det J <= 0) get :data:`FOLD_COLOR`,
a colour no other figure uses. Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
    "#e6beff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
    "#000075",
    "#808080",
)
"""Categorical colours: label values (through :func:`label_color`) and runs in charts."""

FOLD_COLOR = "#00ff00"
"""Folded voxels (det J <= 0): pure green, used by no other figure (not in :data:`PALETTE`)."""

DETJ_STOPS = ((0.0, "#2166ac"), (0.25, "#92c5de"), (0.5, "#f7f7f7"), (0.75, "#f4a582"), (1.0, "#b2182b"))
"""Diverging blue-white-red stops of the det J scale (position in [0, 1], colour); white = det J 1."""

FIXED_CONTOUR_DASH = "solid"
OTHER_CONTOUR_DASH = "dot"
"""Contours: fixed labels solid, moving/warped labels dotted; colour = the label's colour."""


def label_color(value: int) -> str:
    """Colour (``#rrggbb``) of label ``value`` (> 0): ``PALETTE[(value - 1) % 20]``, whatever else is present.

    Values 20 apart share a colour (the palette has 20). Raises ValueError for 0 (background) or < 0.
    """
    v = int(value)
    if v <= 0:
        raise ValueError(f"label value must be > 0 (0 is background), got {value!r}")
    return PALETTE[(v - 1) % len(PALETTE)]


def label_colormap(values: Iterable[int]) -> dict[int, str]:
    """``{value: colour}`` for the non-zero label ``values`` (sorted), each from :func:`label_color`."""
    return {v: label_color(v) for v in sorted({int(x) for x in values}) if v != 0}


def label_index(labels: np.ndarray) -> np.ndarray:
    """Palette index ``(value - 1) % len(PALETTE)`` per voxel of a label map; NaN on background (0)."""
    lab = np.asarray(labels).astype(np.int64)
    return np.where(lab > 0, (lab - 1) % len(PALETTE), np.nan)


def palette_colorscale() -> list:
    """Plotly colourscale of stepped :data:`PALETTE` bins: z = k in [k, k+1) is ``PALETTE[k]``
    (use with ``zmin=0, zmax=len(PALETTE)`` and z = :func:`label_index` + 0.5)."""
    n = len(PALETTE)
    scale = []
    for k, c in enumerate(PALETTE):
        scale += [[k / n, c], [(k + 1) / n, c]]
    return scale


def hex_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> (r, g, b) in 0..255."""
    c = color.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"color must be #rrggbb, got {color!r}")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def label_legend_rows(values: Iterable[int], names: Mapping[int, str] | None = None) -> list[tuple]:
    """``[(value, name, colour)]`` of the non-zero label ``values`` (sorted): the rows of a label legend."""
    names = names or {}
    return [(v, str(names.get(v, f"label {v}")), c) for v, c in label_colormap(values).items()]


def label_legend_html(values: Iterable[int], names: Mapping[int, str] | None = None) -> str:
    """Compact inline HTML legend (swatch, value, name) of the label ``values``; "" when there is none."""
    import html

    items = [
        f'<span style="display:inline-flex;align-items:center;gap:3px;margin:0 10px 2px 0;'
        f'font-size:12px;white-space:nowrap"><span style="display:inline-block;width:11px;height:11px;'
        f'border-radius:2px;background:{c};border:1px solid #0003"></span>{v}&nbsp;{html.escape(n)}</span>'
        for v, n, c in label_legend_rows(values, names)
    ]
    if not items:
        return ""
    return '<div class="rl-label-legend" style="line-height:1.5">' + "".join(items) + "</div>"


@dataclass(frozen=True)
class DetJScale:
    """How a det J slice is drawn: plotted values ``z`` = log2(det J) clipped to ``[-limit, limit]``,
    folded voxels (det J <= 0) set to ``fold_z`` (below ``-limit``, in the folding band of the scale).

    ``colorscale`` (plotly ``[[pos, colour]]``), ``zmin``/``zmax``, and the colour bar's ``tickvals``
    (in z) / ``ticktext`` (det J values and "folded").
    """

    z: np.ndarray
    limit: float
    zmin: float
    zmax: float
    fold_z: float
    colorscale: list
    tickvals: list
    ticktext: list

    def position(self, z: float) -> float:
        """Position in [0, 1] of plotted value ``z`` on the colour scale."""
        return float((z - self.zmin) / (self.zmax - self.zmin))


def detj_scale(jac: np.ndarray, *, limit: float | None = None) -> DetJScale:
    """Diverging det J display of ``jac`` (any shape): symmetric in log2(det J), centred at det J = 1.

    ``limit`` (log2 units; default: the largest |log2 det J| of the unfolded voxels, between log2(1.1) and
    3, i.e. det J between 1/8 and 8). The bottom of the scale is :data:`FOLD_COLOR` for folding, kept
    apart from the strongest shrinkage by a strip of the blue end colour (so no shrinking voxel looks folded).
    """
    j = np.asarray(jac, dtype=float)
    folded = ~(j > 0)  # NaN counts as folded: it is not a valid volume change
    with np.errstate(divide="ignore", invalid="ignore"):
        logj = np.log2(np.where(folded, 1.0, j))
    if limit is None:
        peak = float(np.abs(logj).max()) if logj.size else 0.0
        limit = float(np.clip(peak, np.log2(1.1), 3.0))
    if not np.isfinite(limit) or limit <= 0:
        raise ValueError(f"limit must be a positive number of log2 units, got {limit!r}")
    band = 2 * limit / 11  # the folding band (plus a gap) is 1/12 of the whole scale
    zmin, zmax = -limit - band, limit
    start = band / (zmax - zmin)  # where the diverging part (det J >= 2**-limit) begins
    fold_end = 0.7 * start  # folding colour below; a gap of the blue end colour up to ``start``
    fold_z = zmin + 0.5 * fold_end * (zmax - zmin)
    z = np.where(folded, fold_z, np.clip(logj, -limit, limit))
    blue = DETJ_STOPS[0][1]
    scale = [[0.0, FOLD_COLOR], [fold_end, FOLD_COLOR], [fold_end + 1e-9, blue]]
    scale += [[start + p * (1 - start), c] for p, c in DETJ_STOPS]
    ticks = [t for t in (-3, -2, -1, -0.5, 0, 0.5, 1, 2, 3) if abs(t) <= limit + 1e-9]
    if len(ticks) < 3:
        ticks = [-limit, 0.0, limit]
    text = [f"{2.0**t:.2g}" for t in ticks]
    return DetJScale(
        z=z,
        limit=limit,
        zmin=zmin,
        zmax=zmax,
        fold_z=fold_z,
        colorscale=scale,
        tickvals=[fold_z, *ticks],
        ticktext=["folded", *text],
    )


def colorscale_at(colorscale: list, position: float) -> str:
    """The ``#rrggbb`` colour a stepped/linear plotly ``colorscale`` gives at ``position`` in [0, 1]."""
    pos = float(np.clip(position, 0.0, 1.0))
    for (p0, c0), (p1, c1) in zip(colorscale, colorscale[1:]):
        if p0 <= pos <= p1:
            t = 0.0 if p1 == p0 else (pos - p0) / (p1 - p0)
            a, b = np.array(hex_rgb(c0), float), np.array(hex_rgb(c1), float)
            r, g, bl = np.round(a + t * (b - a)).astype(int)
            return f"#{r:02x}{g:02x}{bl:02x}"
    return colorscale[-1][1]


def matplotlib_cmap(colorscale: list, name: str = "reglab"):
    """A matplotlib colormap with the same stops as a plotly ``[[pos, '#rrggbb'], ...]`` colourscale."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(name, [(float(p), c) for p, c in colorscale])


def symmetric_limit(*arrays: np.ndarray, floor: float = 1e-6) -> float:
    """One colour limit for signed maps shown side by side: max |value| over all ``arrays`` (>= ``floor``)."""
    peak = max((float(np.nanmax(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    return peak if np.isfinite(peak) and peak > floor else 1.0
