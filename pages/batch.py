"""Batch page: a manifest x methods (x a parameter grid) on the batch engine, watched live.

Thin: all work happens in ``regcore.batch.jobs`` (a background process writing to
``runs/batches/<id>/``). Only the batch id lives in ``st.session_state`` ("batch_selected"); the
rest is read back from disk, so a browser refresh or an app restart loses nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pages import _state as state
from regcore.batch import jobs

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "benchmarks" / "manifests"
TERMINAL = ("finished", "stopped", "failed")


def _manifests() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in sorted(MANIFESTS.glob("*.csv"))] if MANIFESTS.is_dir() else []


def submit_form() -> None:
    """Manifest, methods, optional grid, engine -> a new background batch."""
    from regcore.methods.registry import all_specs

    names = [s.name for s in all_specs() if s.available() and not s.needs_training]
    with st.form("batch_form"):
        options = _manifests()
        default = (
            options.index("benchmarks/manifests/sample_brain2d.csv")
            if "benchmarks/manifests/sample_brain2d.csv" in options
            else 0
        )
        manifest = st.selectbox(
            "Pairs manifest (CSV)",
            options + ["other path..."],
            index=default,
            help="name,fixed,moving,fixed_labels,moving_labels,... (paths relative to the CSV)",
        )
        other = st.text_input("Other manifest path", value="", help="Used when 'other path...' is chosen.")
        methods = st.multiselect("Methods", names, default=[n for n in ("demons", "fireants") if n in names])
        grid = st.text_area(
            "Parameter grid (optional, one per line)",
            value="",
            placeholder="weight=0.01,0.1,1,10\ndemons.sigma_elastic=0.5,1.5,3",
            help="KEY=V1,V2,... (every chosen method that has KEY) or METHOD.KEY=V1,V2,...; "
            "several lines multiply. Leave empty for a plain benchmark.",
        )
        c = st.columns(3)
        engine = c[0].radio(
            "Engine",
            ["serial", "ray"],
            horizontal=True,
            help="serial: one task after another; ray: tasks in parallel (local Ray or a cluster)",
        )
        address = c[1].text_input(
            "Ray address (optional)", value="", help="auto or HOST:PORT of a running cluster"
        )
        num_cpus = c[2].number_input("Local Ray CPUs (0 = all)", min_value=0, max_value=512, value=0)
        go = st.form_submit_button("Start batch", type="primary")
    if not go:
        return
    path = other.strip() if manifest == "other path..." else str(ROOT / manifest)
    try:
        batch_id = jobs.start(
            path,
            methods,
            grid=[g for g in grid.splitlines() if g.strip()],
            engine=engine,
            address=address.strip() or None,
            num_cpus=int(num_cpus) or None,
        )
    except (OSError, ValueError, TypeError) as e:
        st.error(f"Cannot start: {e}")
        return
    st.session_state["batch_selected"] = batch_id
    st.session_state.pop("batch_watch", None)
    st.success(f"Started batch {batch_id}")


def results_view(batch_id: str) -> None:
    report = jobs.report(batch_id)
    if report is None:
        st.caption("The combined table appears when the batch ends.")
        return
    from regcore.bench import SUMMARY_COLUMNS

    rows = [
        {
            "variant": s["method"],
            "pairs": s["pairs"],
            "failed": s["failed"],
            **{title: s.get(key) for key, title, _ in SUMMARY_COLUMNS},
        }
        for s in report["summary"]
    ]
    st.subheader("Results")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    if report.get("grid"):
        from regcore.batch.sweep import pareto_figures

        for name, fig in pareto_figures(report).items():
            st.plotly_chart(fig, key=f"batch_{batch_id}_{name}")
    folder = jobs.batch_path(batch_id)
    cols = st.columns(3)
    for col, fname, mime in zip(
        cols,
        ("results.md", "results.json", "pareto.html"),
        ("text/markdown", "application/json", "text/html"),
    ):
        f = folder / fname
        if f.is_file():
            col.download_button(
                f"Download {fname}",
                f.read_bytes(),
                file_name=f"{batch_id}-{fname}",
                mime=mime,
                key=f"batch_dl_{batch_id}_{fname}",
            )


@st.fragment(run_every=2.0)
def live_view(batch_id: str) -> None:
    """Counts, progress, the task table and a task's log; re-drawn every 2 s while the page is open."""
    try:
        status = jobs.status(batch_id)
    except ValueError as e:
        st.error(str(e))
        return
    total = max(int(status.get("total") or 0), 1)
    done, failed = int(status.get("done") or 0), int(status.get("failed") or 0)
    st.progress(min(done / total, 1.0), text=f"{status.get('state')}: {status.get('message', '')}")
    c = st.columns(5)
    c[0].metric("done", f"{done}/{status.get('total') or '?'}")
    c[1].metric("running", status.get("running", 0))
    c[2].metric("failed", failed)
    eta = status.get("eta_s")
    c[3].metric("time left", f"{eta:.0f} s" if eta else "-")
    c[4].metric("engine", status.get("engine") or status["job"].get("engine", "?"))
    if status.get("state") == "failed":
        st.error(f"Batch failed: {status.get('message', '')}")
    rows = jobs.tasks(batch_id)
    if rows:
        st.dataframe(pd.DataFrame(rows).drop(columns=["key"]), hide_index=True)
        labels = [f"{r['variant']} on {r['pair']} ({r['state']})" for r in rows]
        pick = st.selectbox(
            "Task log", range(len(rows)), format_func=lambda i: labels[i], key=f"batch_log_{batch_id}"
        )
        st.code(jobs.task_log(batch_id, rows[pick]["key"]) or "(no log yet)", language=None)
    cols = st.columns(2)
    active = status.get("state") in ("queued", "running")
    if cols[0].button("Stop", disabled=not active, key=f"batch_stop_{batch_id}"):
        jobs.stop(batch_id)
        st.info("Stop requested: tasks in flight finish, the rest wait for a resume.")
    if cols[1].button(
        "Resume", disabled=active or status.get("state") == "finished", key=f"batch_resume_{batch_id}"
    ):
        try:
            jobs.resume(batch_id)
            st.info("Resumed: finished tasks are kept.")
        except ValueError as e:
            st.error(str(e))
    if status.get("state") in TERMINAL:
        results_view(batch_id)


@st.fragment(run_every=2.0)
def batches_table() -> None:
    """One row per batch on disk (state, counts); re-drawn every 2 s, as the live view below it."""
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "batch": b["batch_id"],
                    "state": b.get("state"),
                    "done": b.get("done"),
                    "total": b.get("total"),
                    "failed": b.get("failed"),
                    "methods": ",".join(b["job"].get("methods", [])),
                    "manifest": Path(b["job"].get("manifest", "")).name,
                }
                for b in jobs.list_batches()
            ]
        ),
        hide_index=True,
    )


def main() -> None:
    st.title("Batch: many methods x many pairs")
    st.caption(
        "Benchmarks and parameter sweeps on the batch engine (serial, or Ray on this machine or a cluster). "
        "Batches run in the background and survive a refresh; each finished task is kept on disk."
    )
    batches = jobs.list_batches()
    with st.expander("New batch", expanded=not batches):
        submit_form()
    batches = jobs.list_batches()
    if not batches:
        st.info(
            "No batches yet: start one above (the sample brain pairs x demons and fireants take a few seconds)."
        )
        return
    ids = [b["batch_id"] for b in batches]
    batches_table()
    selected = st.session_state.get("batch_selected")
    choice = st.selectbox(
        "Watch batch", ids, index=ids.index(selected) if selected in ids else 0, key="batch_watch"
    )
    st.session_state["batch_selected"] = choice
    live_view(choice)


state.run_page(main, "batch")
