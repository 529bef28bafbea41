"""One-page, self-contained HTML QA report of a registration (inline PNG images, no scripts).

    >>> from regcore.report import run_report_html, write_report
    >>> html = run_report_html(record)            # a RunRecord (the app's run, or load_run(DIR))
    >>> write_report("out/run1")                   # reads the run folder, writes out/run1/report.html

A clinician can open the file offline: every picture is an embedded base64 PNG, the style is
inline CSS, and nothing is fetched. Never imports streamlit; used by the Evaluate page's
download button, ``regcore report RUN_DIR`` and ``regcore register ... --report``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from regcore import viz
from regcore.metrics.presence import LabelPresence, labels_in_both, mean_over_present
from regcore.run_folder import load_run
from regcore.run_record import RunRecord, RunSlice

__all__ = [
    "REPORT_FILE",
    "SUMMARY_KEYS",
    "qa_report_html",
    "record_presence",
    "run_report_html",
    "write_report",
]

REPORT_FILE = "report.html"

_CSS = """body{font-family:Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#1c2430}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px;color:#2f6fed}
.sub{color:#5b6778;margin-bottom:14px}table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #e3e8f0;padding:4px 10px;text-align:right}th{background:#f3f6fb}
td:first-child,th:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;text-align:center;font-size:12px;color:#5b6778}img{width:250px;border-radius:6px}
.warn{background:#fff4e5;border-left:3px solid #f59f00;padding:6px 10px;margin:6px 0}"""

SUMMARY_KEYS = tuple(
    (k, viz.METRIC_COLUMNS[k])
    for k in (
        "dice_mean",
        "hd95_mean_mm",
        "tre_mean_mm",
        "folding_percent",
        "sdlogj",
        "ncc",
        "runtime_s",
        "peak_memory_mb",
    )
)
"""(metrics key, row title) of the summary table, in order."""

_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


def _png(
    a: np.ndarray,
    *,
    cmap="gray",
    vmin=None,
    vmax=None,
    contours=(),
    flips=(False, False),
    colorbar: tuple[str, list | None, list | None] | None = None,
) -> str:
    """A 2D slice (axis 0 horizontal, as in :mod:`regcore.viz`) as a data: URL.

    contours: ``(label map, linestyle)`` pairs, each structure outlined in its
    :func:`regcore.viz.label_color`; colorbar: ``(title, tick values, tick texts)`` or None.
    """
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, safe in server threads
    )

    aspect = a.shape[1] / max(a.shape[0], 1)
    extra = 1.0 if colorbar else 0.0  # inches for the colour bar, its ticks and its title
    fig = Figure(figsize=(3.2 + extra, 3.2 * aspect), dpi=90)
    ax = fig.add_axes((0.0, 0.0, 3.2 / (3.2 + extra), 1.0))
    im = ax.imshow(a.T, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
    for lab, style in contours:
        if lab is not None:
            for v in [int(v) for v in np.unique(lab) if v != 0][:40]:
                ax.contour(
                    (lab == v).T.astype(float),
                    levels=[0.5],
                    colors=[viz.label_color(v)],
                    linewidths=0.9,
                    linestyles=style,
                )
    if flips[0]:
        ax.invert_xaxis()
    if flips[1]:
        ax.invert_yaxis()
    ax.axis("off")
    if colorbar:
        title, ticks, texts = colorbar
        cax = fig.add_axes((3.2 / (3.2 + extra) + 0.02, 0.08, 0.04, 0.84))
        bar = fig.colorbar(im, cax=cax, ticks=ticks)
        if texts is not None:
            bar.ax.set_yticklabels(texts)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(title, fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(v) -> str:
    return html.escape(viz.format_number(v))


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def qa_report_html(
    view: RunSlice,
    metrics: Mapping,
    before: Mapping | None = None,
    *,
    title: str = "Registration QA",
    pair_name: str = "",
    method: str = "",
    label_names: Mapping[int, str] | None = None,
    presence: LabelPresence | None = None,
) -> str:
    """Self-contained HTML report from one slice of a run.

    Args:
        view: the slice to picture (:meth:`RunRecord.slice`); its ``flips`` orient the panels.
        metrics: :func:`regcore.metrics.evaluate` dict after registration.
        before: the same dict for "no registration" (:attr:`RunRecord.before_metrics`), or None.
        label_names: label value -> structure name (the legend).
        presence: which structures both images hold (:func:`regcore.metrics.presence.labels_in_both`):
            adds the mean Dice over them and lists the skipped ones; None = the engine's means only.
    """
    if not isinstance(view, RunSlice):
        raise TypeError(f"view must be a RunSlice (RunRecord.slice()), got {type(view).__name__}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
    before = dict(before or {})
    flips = view.flips
    f, m, w = (viz.normalise01(a) for a in (view.fixed, view.moving, view.warped))
    detj = viz.detj_scale(np.asarray(view.jac, dtype=float))
    diff_lim = viz.difference_limit(view.fixed, view.moving, view.warped)  # before and after: one range
    diff_bar = ("difference", None, None)
    tile = max(4, min(f.shape) // 8)
    panels = [
        ("Fixed", _png(f, flips=flips)),
        ("Moving (before)", _png(m, flips=flips)),
        ("Warped moving (after)", _png(w, flips=flips)),
        ("Checkerboard before", _png(viz.checkerboard(f, m, tile), flips=flips)),
        ("Checkerboard after", _png(viz.checkerboard(f, w, tile), flips=flips)),
        (
            "Difference before (moving - fixed)",
            _png(m - f, cmap="RdBu_r", vmin=-diff_lim, vmax=diff_lim, flips=flips, colorbar=diff_bar),
        ),
        (
            "Difference after (warped - fixed), same scale",
            _png(w - f, cmap="RdBu_r", vmin=-diff_lim, vmax=diff_lim, flips=flips, colorbar=diff_bar),
        ),
        (
            "Jacobian determinant (blue shrink, white 1, red growth, green folding)",
            _png(
                detj.z,
                cmap=viz.colors.matplotlib_cmap(detj.colorscale, "detj"),
                vmin=detj.zmin,
                vmax=detj.zmax,
                flips=flips,
                colorbar=("det J", detj.tickvals, detj.ticktext),
            ),
        ),
    ]
    legend = ""
    if view.fixed_labels is not None:
        present = [
            v
            for lab in (view.fixed_labels, view.moving_labels, view.warped_labels)
            if lab is not None
            for v in np.unique(lab)
        ]
        legend = viz.label_legend_html(present, label_names)
        panels.append(
            (
                "Contours before: fixed (solid) / moving (dashed)",
                _png(f, contours=((view.fixed_labels, "solid"), (view.moving_labels, "dashed")), flips=flips),
            )
        )
        panels.append(
            (
                "Contours after: fixed (solid) / warped (dashed)",
                _png(f, contours=((view.fixed_labels, "solid"), (view.warped_labels, "dashed")), flips=flips),
            )
        )
    dice = metrics.get("dice") or {}
    summary = []
    skipped_note = ""
    if dice and presence is not None:  # the mean a person expects: structures both images hold
        after_mean = mean_over_present(dice, presence)
        before_mean = mean_over_present(before.get("dice") or {}, presence)
        summary.append(
            {
                "metric": "Mean Dice (labels in both images)",
                "before": before_mean.mean,
                "after": after_mean.mean,
            }
        )
        if after_mean.skipped:
            skipped_note = (
                "<p class='sub'>Left out of the mean Dice above (present in only one image): "
                + html.escape(", ".join(after_mean.skipped))
                + ". The mean over all labels counts them as 0.</p>"
            )
    summary += [
        {
            "metric": label + (" (all labels)" if k == "dice_mean" and presence is not None else ""),
            "before": before.get(k),
            "after": metrics.get(k),
        }
        for k, label in SUMMARY_KEYS
        if metrics.get(k) is not None
    ]
    skipped = set(presence.skipped) if presence is not None else set()
    per = [
        {
            "structure": s + (" (in one image only)" if s in skipped else ""),
            "Dice before": (before.get("dice") or {}).get(s),
            "Dice after": v,
            "HD95 after (mm)": (metrics.get("hd95") or {}).get(s),
        }
        for s, v in dice.items()
    ]
    tre_before, tre_after = before.get("tre") or {}, metrics.get("tre") or {}
    per_lm = [
        {"landmark": i, "TRE before (mm)": tre_before.get(i), "TRE after (mm)": v}
        for i, v in tre_after.items()
    ]
    warnings = "".join(
        f'<div class="warn">{html.escape(str(x))}</div>' for x in metrics.get("warnings") or []
    )
    figs = "".join(
        f'<figure><img alt="{html.escape(t)}" src="{src}"><figcaption>{html.escape(t)}</figcaption></figure>'
        for t, src in panels
    )
    where = "" if view.axis is None else f" ({_PLANES.get(view.axis, view.axis)} slice {view.index})"
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<div class='sub'>Pair: {html.escape(pair_name)} · method: {html.escape(method)} · "
        f"device: {html.escape(str(metrics.get('device', '')))} · {when} · RegLab</div>{warnings}"
        f"<h2>Summary</h2>{_table(summary)}{skipped_note}<h2>Images{html.escape(where)}</h2>"
        f"<div class='grid'>{figs}</div>{legend}"
        f"{'<h2>Per structure</h2>' + _table(per) if per else ''}"
        f"{'<h2>Per landmark</h2>' + _table(per_lm) if per_lm else ''}"
        "<p class='sub'>Checkerboard: alternating tiles of fixed and moving; edges should line up after "
        "registration. Difference before and after share one colour scale. Jacobian determinant: local volume "
        "change (white = 1, none; red = growth; blue = shrinkage; log scale); green = values <= 0, where the "
        "deformation folds and is not physically plausible. Contours: each structure in its own colour "
        "(the legend), fixed solid, moving/warped dashed.</p></body></html>"
    )


def run_report_html(
    record: RunRecord, axis: int | None = None, index: int | None = None, *, title: str = "Registration QA"
) -> str:
    """:func:`qa_report_html` of a :class:`RunRecord` at one slice (3D default: the middle axial slice)."""
    if not isinstance(record, RunRecord):
        raise TypeError(f"record must be a RunRecord, got {type(record).__name__}")
    return qa_report_html(
        record.slice(axis, index),
        record.metrics,
        record.before_metrics,
        title=title,
        pair_name=record.pair_name,
        method=record.method,
        label_names=record.label_names,
        presence=record_presence(record),
    )


def record_presence(record: RunRecord) -> LabelPresence | None:
    """Which structures the run's fixed and moving label maps both hold (None without both maps)."""
    if record.fixed_labels is None or record.moving_labels is None:
        return None
    return labels_in_both(record.fixed_labels, record.moving_labels, record.label_names or None)


def write_report(
    run: RunRecord | str | Path,
    path: str | Path | None = None,
    *,
    axis: int | None = None,
    index: int | None = None,
) -> Path:
    """Write the QA report of a RunRecord, or of a run folder (default ``RUN_DIR/report.html``).

    Raises ValueError naming the file when the run folder is incomplete.
    """
    if isinstance(run, RunRecord):
        if path is None:
            raise ValueError("path is required when writing the report of a RunRecord")
        record = run
    else:
        record = load_run(run)
        path = Path(run) / REPORT_FILE if path is None else path
    out = Path(path)
    text = run_report_html(record, axis, index)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    return out
