"""Evaluate & compare: pictures first, then per-structure tables and plots, then exports."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import _backend as backend
from pages import _state as state
from pages import _uncertainty_view as uncertainty_view
from pages import _views as views
from regcore import viz

SUMMARY_COLUMNS = {
    "dice_mean": "mean Dice",
    "hd95_mean_mm": "mean HD95 (mm)",
    "tre_mean_mm": "mean TRE (mm)",
    "folding_percent": "folding %",
    "sdlogj": "SDlogJ",
    "ncc": "NCC",
    "runtime_s": "runtime (s)",
    "peak_memory_mb": "peak memory (MiB)",
    "device": "device",
}


def comparison_table(runs: dict) -> pd.DataFrame:
    """One row per run (plus a 'before' row per pair): the headline metrics side by side."""
    rows, seen_pairs = [], set()
    for label, r in runs.items():
        if r.pair_name not in seen_pairs:
            seen_pairs.add(r.pair_name)
            rows.append(
                {
                    "run": f"before ({r.pair_name})",
                    **{
                        v: r.before_metrics.get(k)
                        for k, v in SUMMARY_COLUMNS.items()
                        if k not in ("runtime_s", "peak_memory_mb")
                    },
                }
            )
        rows.append(
            {
                "run": label,
                **{v: r.metrics.get(k, getattr(r.result, k, None)) for k, v in SUMMARY_COLUMNS.items()},
            }
        )
    df = pd.DataFrame(rows)
    return df.dropna(axis=1, how="all")


def per_structure(runs: dict, key: str) -> pd.DataFrame:
    """Structures x runs table of ``metrics[key]`` (e.g. 'dice', 'hd95', 'tre')."""
    cols = {label: r.metrics.get(key) or {} for label, r in runs.items()}
    cols = {k: v for k, v in cols.items() if v}
    return pd.DataFrame(cols) if cols else pd.DataFrame()


def _download(label: str, data, file_name: str, key: str, mime: str = "application/octet-stream") -> None:
    st.download_button(
        label, data, file_name=file_name, mime=mime, key=key, icon=":material/download:", width="stretch"
    )


def _saved_bytes(save, suffix: str):
    """A zero-argument callable producing the file bytes (runs only when the user clicks download)."""

    def produce() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"out{suffix}"
            save(path)
            return path.read_bytes()

    return produce


def _exports(label: str, run, shown) -> None:
    """Download buttons for one run (files are produced only when clicked); ``shown`` is the slice on screen."""
    result = run.result
    stem = "".join(c if c.isalnum() else "_" for c in label)
    c = st.columns(5)
    with c[0]:
        _download(
            "Warped image",
            _saved_bytes(lambda p: backend.save_image(result.warped, p), ".nii.gz"),
            f"{stem}_warped.nii.gz",
            f"dl_w_{stem}",
        )
    with c[1]:
        _download(
            "Displacement field",
            _saved_bytes(
                lambda p: backend.save_displacement(result.displacement, result.fixed.geometry, p), ".nii.gz"
            ),
            f"{stem}_displacement.nii.gz",
            f"dl_d_{stem}",
        )
    with c[2]:
        if run.warped_labels is not None:
            _download(
                "Warped labels",
                _saved_bytes(lambda p: backend.save_image(run.warped_labels, p), ".nii.gz"),
                f"{stem}_warped_labels.nii.gz",
                f"dl_l_{stem}",
            )
    with c[3]:
        m = {k: v for k, v in run.metrics.items() if not isinstance(v, (dict, list))}
        for k in ("dice", "hd95", "tre"):
            for s, v in (run.metrics.get(k) or {}).items():
                m[f"{k}:{s}"] = v
        _download(
            "Metrics CSV",
            pd.DataFrame([m]).to_csv(index=False).encode(),
            f"{stem}_metrics.csv",
            f"dl_m_{stem}",
            "text/csv",
        )
    with c[4]:
        _download(
            "QA report (HTML)",
            lambda: backend.run_report_html(run, shown.axis, shown.index).encode(),
            f"{stem}_qa_report.html",
            f"dl_r_{stem}",
            "text/html",
        )


def body() -> None:
    state.ensure_state()
    st.title("Evaluate & compare")
    runs = state.runs()
    if not runs:
        st.info(
            "No runs yet. Open the Home page (it registers a sample pair) or run a method on the Register page."
        )
        st.page_link("pages/register.py", label="Go to Register", icon=":material/join_inner:")
        return
    labels = list(runs)
    chosen = st.multiselect("Runs to compare", labels, default=labels, key="eval_runs")
    selected = {k: runs[k] for k in chosen}
    focus = st.selectbox(
        "Pictures for run",
        labels,
        index=labels.index(st.session_state.get("last_run", labels[-1]))
        if st.session_state.get("last_run") in labels
        else len(labels) - 1,
        key="eval_focus",
    )
    run = runs[focus]
    shown = views.render_views(run, key="eval")
    if not selected:
        return
    st.subheader("Side by side")
    st.dataframe(comparison_table(selected), hide_index=True, width="stretch")
    dice = per_structure(selected, "dice")
    if not dice.empty:
        c1, c2 = st.columns([3, 2])
        c1.plotly_chart(
            viz.metric_bar_figure({k: dice[k].dropna().to_dict() for k in dice.columns}),
            width="stretch",
            key="eval_bar",
        )
        c2.plotly_chart(
            viz.metric_box_figure({k: dice[k].dropna().tolist() for k in dice.columns}),
            width="stretch",
            key="eval_box",
        )
        st.markdown("**Dice per structure**")
        st.dataframe(
            dice.style.format("{:.3f}").background_gradient(cmap="Blues", vmin=0, vmax=1), width="stretch"
        )
    else:
        st.caption("No label maps on these pairs: Dice/HD95 need fixed and moving labels.")
    hd = per_structure(selected, "hd95")
    if not hd.empty:
        st.markdown("**HD95 per structure (mm)**")
        st.dataframe(hd.style.format("{:.2f}"), width="stretch")
    tre = per_structure(selected, "tre")
    if not tre.empty:
        st.markdown("**TRE per landmark (mm)**")
        st.dataframe(tre.style.format("{:.2f}"), width="stretch")
    losses = run.result.loss_history
    if losses:
        st.plotly_chart(
            viz.loss_curve_figure(losses, title=f"Loss: {focus}"), width="stretch", key="eval_loss"
        )
    st.subheader("Export")
    _exports(focus, run, shown)
    uncertainty_view.render(runs, focus)


state.run_page(body, "evaluate")
