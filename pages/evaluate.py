"""Evaluate & compare: pictures first, then per-structure tables and plots (built in pages/_tables), then
exports (full-precision metrics, unchanged by the display formatting)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import _backend as backend
from pages import _state as state
from pages import _tables as tables
from pages import _uncertainty_view as uncertainty_view
from pages import _views as views
from regcore import viz


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


def _keep_chosen_runs(labels: list[str]) -> None:
    """The kept "Runs to compare" choice, minus runs that are gone, plus runs added since it was made
    (a new run is compared by default; one the user removed from the choice stays out)."""
    known = st.session_state.get("_eval_known_runs")
    chosen = st.session_state.get("eval_runs")
    if chosen is None or known is None:
        st.session_state["eval_runs"] = list(labels)
    else:
        kept = [k for k in chosen if k in labels]
        st.session_state["eval_runs"] = kept + [k for k in labels if k not in known and k not in kept]
    st.session_state["_eval_known_runs"] = list(labels)


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
    _keep_chosen_runs(labels)
    chosen = st.multiselect("Runs to compare", labels, key="eval_runs")
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
    include_all = st.toggle(
        "Include labels present in only one image",
        value=False,
        key="eval_all_labels",
        help="Off: means and Dice plots use only the structures both images hold (a structure missing from "
        "one image scores Dice 0 whatever the registration does). On: every label, as stored in the metrics.",
    )
    tables.show(tables.comparison_table(selected, include_all), hide_index=True, width="stretch")
    skipped = tables.skipped_labels(selected)
    for pair_name, names in skipped.items():
        st.caption(
            f"{'Counted as Dice 0 in' if include_all else 'Left out of'} mean Dice for {pair_name} "
            f"(present in only one image): {', '.join(names)}."
        )
    dice = tables.per_structure(selected, "dice", include_all)
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
            dice.style.format(viz.format_number, na_rep=viz.MISSING).background_gradient(
                cmap="Blues", vmin=0, vmax=1
            ),
            width="stretch",
        )
    else:
        st.caption("No label maps on these pairs: Dice/HD95 need fixed and moving labels.")
    hd = tables.per_structure(selected, "hd95", include_all)
    if not hd.empty:
        st.markdown("**HD95 per structure (mm)**")
        tables.show(hd, width="stretch")
    tre = tables.per_structure(selected, "tre")
    if not tre.empty:
        st.markdown("**TRE per landmark (mm)**")
        tables.show(tre, width="stretch")
    settings = tables.settings_table(selected)
    if not settings.empty:
        with st.expander("Settings of each run (rows where they differ first)"):
            st.dataframe(
                settings.fillna(viz.MISSING),
                width="stretch",
                column_config={"_index": st.column_config.Column(width="medium")},  # whole setting names
            )
    losses = run.result.loss_history
    if losses:
        st.plotly_chart(
            viz.loss_curve_figure(losses, title=f"Loss: {focus}"), width="stretch", key="eval_loss"
        )
    st.subheader("Export")
    _exports(focus, run, shown)
    uncertainty_view.render(runs, focus)


state.run_page(body, "evaluate")
