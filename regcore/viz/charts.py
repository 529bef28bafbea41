"""Charts of numbers: metric bars and boxes, loss curves, lines.

Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from regcore.viz.colors import PALETTE


def _chart_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "font": {"size": 14}},
        height=height,
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def metric_bar_figure(
    values: Mapping[str, Mapping[str, float]],
    *,
    title: str = "Dice per structure",
    height: int = 380,
    x_title: str = "structure",
    y_title: str = "Dice",
) -> go.Figure:
    """Grouped bars: ``values[run][structure] -> value`` (one colour per run; legend above the plot)."""
    if not values:
        raise ValueError("values must contain at least one run")
    fig = go.Figure()
    for k, (run, per) in enumerate(values.items()):
        fig.add_trace(
            go.Bar(
                name=str(run),
                x=list(per.keys()),
                y=list(per.values()),
                marker_color=PALETTE[k % len(PALETTE)],
            )
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(tickangle=-45, automargin=True, title=x_title)
    fig.update_yaxes(title=y_title)
    return _chart_layout(fig, title, height)


def metric_box_figure(
    values: Mapping[str, Sequence[float]],
    *,
    title: str = "Dice distribution",
    height: int = 380,
    y_title: str = "Dice per structure",
) -> go.Figure:
    """One box (with points) per run over its per-structure values."""
    if not values:
        raise ValueError("values must contain at least one run")
    fig = go.Figure()
    for k, (run, vals) in enumerate(values.items()):
        fig.add_trace(
            go.Box(
                y=list(vals),
                name=str(run),
                boxpoints="all",
                jitter=0.3,
                marker_color=PALETTE[k % len(PALETTE)],
            )
        )
    fig.update_xaxes(title="run", automargin=True)
    fig.update_yaxes(title=y_title)
    fig.update_layout(showlegend=False)  # the x axis already names each box
    return _chart_layout(fig, title, height)


LOSS_HISTORY_NON_LOSS_KEYS = frozenset({"level", "pyramid_level", "iteration", "iter", "step", "epoch"})
"""Keys of a loss-history entry that count steps, not losses: never drawn as a loss curve."""


def loss_curve_figure(
    history: Sequence[Mapping[str, float]], *, title: str = "Loss", height: int = 260
) -> go.Figure:
    """One line per loss term over iterations (``history[i][term]``); a pyramid ``level`` key is not a loss:
    its changes are drawn as dotted vertical lines labelled with the new level."""
    fig = go.Figure()
    keys = sorted({k for h in history for k in h} - LOSS_HISTORY_NON_LOSS_KEYS)
    for k, key in enumerate(keys):
        fig.add_trace(
            go.Scatter(
                y=[h.get(key) for h in history],
                mode="lines",
                name=key,
                line={"color": PALETTE[k % len(PALETTE)]},
            )
        )
    levels = [h.get("level") for h in history]
    for i in range(1, len(levels)):
        if levels[i] is not None and levels[i] != levels[i - 1]:
            fig.add_vline(
                x=i - 0.5,
                line={"dash": "dot", "color": "#888", "width": 1},
                annotation_text=f"level {levels[i]:g}",
                annotation_font_size=10,
            )
    fig.update_xaxes(title="iteration")
    fig.update_yaxes(title="loss")
    return _chart_layout(fig, title, height)


def line_figure(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    height: int = 320,
    markers: bool = False,
) -> go.Figure:
    """Simple multi-line chart used by the concept labs (e.g. similarity vs translation)."""
    fig = go.Figure()
    for k, (name, ys) in enumerate(series.items()):
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(ys),
                mode="lines+markers" if markers else "lines",
                name=name,
                line={"color": PALETTE[k % len(PALETTE)], "width": 2},
            )
        )
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return _chart_layout(fig, title, height)
