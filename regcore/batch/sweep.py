"""Parameter sweeps: grid expansion (method parameters x pairs), the sweep table and Pareto plots.

    regcore sweep --pairs brain2d.csv --methods dense,svf --grid weight=0.01,0.1,1,10 --out sweep/

A grid item is ``KEY=V1,V2,...`` (every listed method that has parameter KEY) or
``METHOD.KEY=V1,V2,...`` (that method only); several items multiply. Each grid point is a *variant*
labelled like ``dense[weight=0.1]`` and runs on every pair as one task of the batch engine.

Outputs (:func:`write_sweep_outputs`): ``sweep.md`` (one row per variant, best Dice first),
``pareto.html`` (interactive plotly: Dice vs folding %, Dice vs runtime, Dice vs SDlogJ - the smoothness that
still differs when nothing folds -, Pareto fronts marked) and ``pareto.png`` (the same panels drawn with
matplotlib, so no browser or kaleido is needed).
The regularisation-weight sweep is the teaching example: more weight = less folding, and past a
point less Dice; the Pareto front shows the weights worth considering.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Variant", "expand", "pareto_figures", "pareto_front", "parse_grid", "write_sweep_outputs"]

AXES = (
    ("folding_percent", "folding %", "dice_vs_folding"),
    ("runtime_s", "runtime s (median)", "dice_vs_runtime"),
    ("sdlogj", "SDlogJ (field roughness)", "dice_vs_sdlogj"),
)


@dataclass(frozen=True)
class Variant:
    """One grid point of one method: ``label`` names it in tables (``demons[sigma_elastic=2]``)."""

    label: str
    method: str
    overrides: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def parse_grid(items: Sequence[str] | None, methods: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """``["weight=0.1,1", "demons.sigma_elastic=1,2"]`` -> ``{method: {param: [values]}}``.

    Raises ValueError naming the item when it is malformed or names no listed method's parameter.
    """
    import dataclasses

    from regcore.methods.registry import get

    grid: dict[str, dict[str, list[str]]] = {}
    for item in items or []:
        key, sep, values = str(item).partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise ValueError(f"--grid expects KEY=V1,V2,... or METHOD.KEY=V1,V2,..., got {item!r}")
        method, dot, name = key.partition(".")
        if dot:
            if method not in methods:
                raise ValueError(
                    f"--grid {item!r} names method {method!r}, which is not in --methods {list(methods)}"
                )
            targets = [method]
            names = {f.name for f in dataclasses.fields(get(method).config_cls)}
            if name not in names:
                raise ValueError(
                    f"--grid {item!r}: unknown parameter {name!r} of {method}; known: {sorted(names)}"
                )
        else:
            name = key
            targets = [m for m in methods if name in {f.name for f in dataclasses.fields(get(m).config_cls)}]
            if not targets:
                raise ValueError(
                    f"--grid {item!r}: none of the methods {list(methods)} has a parameter {name!r} "
                    "(see `regcore methods`)"
                )
        for m in targets:
            grid.setdefault(m, {})[name] = vals
    return grid


def expand(
    methods: Sequence[str],
    grid: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Variant]:
    """Every variant: for each method, the cartesian product of its grid values (fixed ``overrides``
    apply underneath). Each combination is validated (ValueError names the parameter) before any work."""
    from regcore.methods.registry import get

    out = []
    for method in methods:
        g = dict((grid or {}).get(method, {}))
        keys = list(g)
        for combo in itertools.product(*(list(g[k]) for k in keys)):
            params = dict(zip(keys, combo))
            ov = {**dict((overrides or {}).get(method, {})), **params}
            get(method).make_config(ov)
            label = method if not params else f"{method}[{','.join(f'{k}={v}' for k, v in params.items())}]"
            out.append(Variant(label=label, method=method, overrides=ov, params=params))
    labels = [v.label for v in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the grid repeats a variant: {labels}")
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower x (cost) and higher y (Dice), sorted by x."""
    idx = [i for i, (x, y) in enumerate(points) if x is not None and y is not None]
    front = []
    for i in idx:
        xi, yi = points[i]
        dominated = any(
            (points[j][0] <= xi and points[j][1] >= yi) and (points[j][0] < xi or points[j][1] > yi)
            for j in idx
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _rows(report: Mapping) -> list[dict]:
    return [s for s in report.get("summary", []) if s.get("dice_mean") is not None]


def pareto_figures(report: Mapping) -> dict[str, Any]:
    """``{"dice_vs_folding", "dice_vs_runtime", "dice_vs_sdlogj"}`` -> ``go.Figure`` from a benchmark report's summary."""
    import plotly.graph_objects as go

    rows = _rows(report)
    figs = {}
    for key, title, name in AXES:
        fig = go.Figure()
        for method in dict.fromkeys(r.get("base_method", r["method"]) for r in rows):
            pts = [r for r in rows if r.get("base_method", r["method"]) == method]
            fig.add_trace(
                go.Scatter(
                    x=[r.get(key) for r in pts],
                    y=[r["dice_mean"] for r in pts],
                    mode="markers+text",
                    name=method,
                    text=[_short(r) for r in pts],
                    textposition="top center",
                    marker={"size": 10},
                    hovertemplate="%{text}<br>"
                    + title
                    + " %{x:.3g}<br>Dice %{y:.4f}<extra>"
                    + method
                    + "</extra>",
                )
            )
        pts = [(r.get(key), r["dice_mean"]) for r in rows]  # type: ignore[misc]
        front = pareto_front(pts)
        if len(front) > 1:
            fig.add_trace(
                go.Scatter(
                    x=[pts[i][0] for i in front],
                    y=[pts[i][1] for i in front],
                    mode="lines",
                    name="Pareto front",
                    line={"dash": "dash", "color": "gray"},
                )
            )
        fig.update_layout(
            title=f"Dice vs {title}",
            xaxis_title=title,
            yaxis_title="mean Dice",
            template="plotly_white",
            height=480,
        )
        figs[name] = fig
    return figs


def _short(row: Mapping) -> str:
    params = row.get("params") or {}
    return ",".join(f"{k}={v}" for k, v in params.items()) or row["method"]


def _png(report: Mapping, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(report)
    fig, axes = plt.subplots(1, len(AXES), figsize=(6 * len(AXES), 4.8))
    for ax, (key, title, _) in zip(axes, AXES):
        for method in dict.fromkeys(r.get("base_method", r["method"]) for r in rows):
            pts = [r for r in rows if r.get("base_method", r["method"]) == method and r.get(key) is not None]
            ax.scatter([r[key] for r in pts], [r["dice_mean"] for r in pts], label=method, s=40)
            for r in pts:
                ax.annotate(
                    _short(r), (r[key], r["dice_mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        pts = [(r.get(key), r["dice_mean"]) for r in rows]  # type: ignore[misc]
        front = pareto_front(pts)
        if len(front) > 1:
            ax.plot(
                [pts[i][0] for i in front],
                [pts[i][1] for i in front],
                "--",
                color="gray",
                label="Pareto front",
            )
        ax.set_xlabel(title)
        ax.set_ylabel("mean Dice")
        ax.set_title(f"Dice vs {title}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_markdown(report: Mapping) -> str:
    """One row per variant (best mean Dice first), its parameters, and whether it is on a Pareto front."""
    rows = list(report.get("summary", []))
    ok = _rows(report)
    on_front = set()
    for key, _, _ in AXES:
        pts = [(r.get(key), r["dice_mean"]) for r in ok]
        on_front |= {ok[i]["method"] for i in pareto_front(pts)}
    rows.sort(key=lambda r: -(r.get("dice_mean") if r.get("dice_mean") is not None else -1.0))

    def f(v, d=3):
        return "n/a" if v is None else f"{v:.{d}f}"

    lines = [
        f"# Sweep: {Path(str(report.get('manifest', ''))).name}",
        "",
        f"Grid: `{report.get('grid') or {}}`",
        "",
        "| variant | pairs | Dice | HD95 mm | folding % | SDlogJ | runtime s | Pareto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['pairs']}"
            + (f" ({r['failed']} failed)" if r.get("failed") else "")
            + f" | {f(r.get('dice_mean'), 4)} | {f(r.get('hd95_mean_mm'), 2)} | {f(r.get('folding_percent'), 3)}"
            f" | {f(r.get('sdlogj'), 3)} | {f(r.get('runtime_s'), 2)} | {'yes' if r['method'] in on_front else ''} |"
        )
    return "\n".join(lines) + "\n"


def write_sweep_outputs(report: Mapping, out_dir: str | Path) -> dict[str, str]:
    """Write ``sweep.md``, ``pareto.html`` and ``pareto.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "sweep_markdown": out / "sweep.md",
        "pareto_html": out / "pareto.html",
        "pareto_png": out / "pareto.png",
    }
    paths["sweep_markdown"].write_text(sweep_markdown(report), encoding="utf-8")
    figs = list(pareto_figures(report).values())
    html = [
        "<html><head><meta charset='utf-8'><title>RegLab sweep</title></head><body>",
        f"<h2>RegLab sweep: {Path(str(report.get('manifest', ''))).name}</h2>",
    ]
    for i, fig in enumerate(figs):
        html.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    html.append("</body></html>")
    paths["pareto_html"].write_text("\n".join(html), encoding="utf-8")
    _png(report, paths["pareto_png"])
    return {k: str(v) for k, v in paths.items()}
