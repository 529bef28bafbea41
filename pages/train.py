"""Train page: configure and launch training runs, watch them live, stop/resume, compare, use.

Thin: all work happens in ``regcore.train.jobs`` (background processes writing to runs/<id>/).
Only run ids live in ``st.session_state`` ("train_selected", "train_compare"); everything else
is read back from disk, so a browser refresh or an app restart loses nothing.
"""

from __future__ import annotations

import enum
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages import _limits as limits
from pages import _roots as server_roots
from pages import _state as state
from pages import _widgets as widgets
from regcore.config import describe
from regcore.methods.learned.family import all_families, get_family
from regcore.train import jobs
from regcore.train.config import COMMON_FIELDS, TrainConfig, config_from_dict

QUICK_DEMO = {
    "epochs": 2,
    "steps_per_epoch": 3,
    "batch_size": 2,
    "train_shape": [32, 32],
    "val_pairs": 2,
    "synthetic_pool": 4,
    "data": "shapes",
    "device": "cpu",
    "threads": 1,
}
TERMINAL = ("stopped", "finished", "failed")


def _widget(spec, key: str):
    """One input widget built from a TrainConfig ParamSpec."""
    label, help_ = spec.name.replace("_", " "), spec.help
    if spec.choices:
        options = [c.value if isinstance(c, enum.Enum) else c for c in spec.choices]
        default = spec.default.value if isinstance(spec.default, enum.Enum) else spec.default
        return st.selectbox(label, options, index=options.index(default), help=help_, key=key)
    if spec.type == "bool":
        return st.checkbox(label, value=spec.default, help=help_, key=key)
    if spec.type == "tuple":
        text = st.text_input(label, value=", ".join(str(v) for v in spec.default), help=help_, key=key)
        return widgets.parse_numbers(text, spec.default, spec.name)
    if spec.type in ("int", "float"):
        lo, hi = spec.range if spec.range else (None, None)
        cast = int if spec.type == "int" else float
        return st.number_input(
            label,
            value=cast(spec.default),
            min_value=cast(lo) if lo is not None else None,
            max_value=cast(hi) if hi is not None else None,
            help=help_,
            key=key,
            format="%g" if cast is float else "%d",
        )
    return st.text_input(label, value=str(spec.default), help=help_, key=key)


def _family_picker():
    """Family choice (outside the form, so the family's own fields follow it) and its plain-words card."""
    families = [f for f in all_families() if f.needs_training]
    names = [f.name for f in families]
    default = names.index(TrainConfig.family) if TrainConfig.family in names else 0
    name = st.selectbox(
        "Family", names, index=default, format_func=lambda n: get_family(n).title or n, key="train_family"
    )
    fam = get_family(name)
    st.caption(f"**How it works.** {fam.summary}  \n*Paper:* {fam.paper}")
    return fam


def config_form() -> None:
    """The new-run form: the family, its own hyperparameters and the common recipe fields."""
    fam = _family_picker()
    common = [s for s in describe(TrainConfig) if s.name in COMMON_FIELDS and s.name != "family"]
    dims = st.session_state.get(f"train_{fam.name}_dims", 2)
    recipe = fam.recipe(dims if dims in fam.dims else fam.dims[0])
    common = [replace(s, default=recipe.get(s.name, s.default)) for s in common]
    with st.form(f"train_form_{fam.name}"):
        values: dict = {"family": fam.name}
        cols = st.columns(3)
        for i, spec in enumerate(s for s in common if not s.advanced):
            with cols[i % 3]:
                values[spec.name] = _widget(spec, f"train_{fam.name}_{spec.name}")
        family_specs = describe(fam.Config)
        family_values = {}
        if family_specs:
            st.markdown(f"**{fam.title} settings**")
            fcols = st.columns(3)
            for i, spec in enumerate(family_specs):
                with fcols[i % 3]:
                    family_values[spec.name] = _widget(spec, f"train_{fam.name}_fam_{spec.name}")
        with st.expander("Advanced"):
            for spec in (s for s in common if s.advanced):
                values[spec.name] = _widget(spec, f"train_{fam.name}_{spec.name}")
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        try:
            if values.get("dims") == 3 and len(values.get("train_shape", [])) == 2:
                values["train_shape"] = list(fam.recipe(3).get("train_shape", (64, 80, 64)))
            values["family_config"] = family_values
            _start(config_from_dict(values))
        except (TypeError, ValueError) as e:
            st.error(f"Cannot start: {e}")
    if st.button(f"Quick demo run of {fam.title} (tiny, ~30 s on CPU)", key="train_quick_demo"):
        div = fam.divisor(2, fam.make_config({}))
        shape = [max(32, div)] * 2
        _start(config_from_dict({**QUICK_DEMO, "family": fam.name, "train_shape": shape}))


def _active_runs() -> list[str]:
    return [r["run_id"] for r in jobs.list_runs() if r.get("state") in ("queued", "running")]


def _check_paths(config: TrainConfig) -> None:
    """A visitor's data_path / init_checkpoint must lie in the server's allowed folders."""
    if config.data_path:
        with server_roots.confined():
            from regcore.io.confine import outside_roots

            reason = outside_roots(config.data_path)
        if reason:
            raise ValueError(f"data_path {config.data_path!r} {reason}")
    if config.init_checkpoint:
        server_roots.check_model_path(config.init_checkpoint)


def _start(config: TrainConfig) -> None:
    try:
        _check_paths(config)
        with limits.training_start(limits.visitor(), _active_runs) as record:
            run_id = jobs.start(config)
            record(run_id)
    except (OSError, ValueError, limits.ServerBusy) as e:
        st.error(f"Cannot start the run: {e}")
        return
    st.session_state["train_selected"] = run_id
    st.session_state.pop("train_watch", None)  # "Watch run" follows the new run
    st.success(f"Started run {run_id}")


def runs_table(runs: list[dict]) -> None:
    rows = [
        {
            "run": r["run_id"],
            "state": r.get("state"),
            "epoch": r.get("epoch"),
            "step": f"{r.get('step', 0)}/{r.get('total_steps', '?')}",
            "family": r["config"].get("family"),
            "data": r["config"].get("data"),
            "supervision": r["config"].get("supervision"),
            "message": r.get("message", ""),
        }
        for r in runs
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def curves(run_ids: list[str]) -> go.Figure:
    """Loss terms per step (left) and validation Dice / folding per epoch (right) for one or more runs."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("training loss terms", "validation"),
        specs=[[{}, {"secondary_y": True}]],
    )
    for run_id in run_ids:
        recs = jobs.metrics(run_id)
        steps = pd.DataFrame([r for r in recs if r.get("kind") == "step"])
        epochs = pd.DataFrame([r for r in recs if r.get("kind") == "epoch"])
        tag = f"{run_id}: " if len(run_ids) > 1 else ""
        if not steps.empty:
            for term in [c for c in steps.columns if c not in ("kind", "epoch", "step", "time_s")]:
                fig.add_trace(
                    go.Scatter(x=steps["step"], y=steps[term], name=f"{tag}{term}", mode="lines"), 1, 1
                )
        if not epochs.empty:
            fig.add_trace(
                go.Scatter(
                    x=epochs["epoch"], y=epochs["val_dice"], name=f"{tag}val Dice", mode="lines+markers"
                ),
                1,
                2,
            )
            fig.add_trace(
                go.Scatter(
                    x=epochs["epoch"],
                    y=epochs["val_folding_percent"],
                    name=f"{tag}folding %",
                    mode="lines+markers",
                    line={"dash": "dot"},
                ),
                1,
                2,
                secondary_y=True,
            )
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_yaxes(title_text="Dice", row=1, col=2)
    fig.update_yaxes(title_text="folding %", row=1, col=2, secondary_y=True)
    fig.update_layout(height=360, margin={"t": 40, "b": 10})
    return fig


def run_controls(run_id: str, status: dict) -> None:
    cols = st.columns(3)
    state = status.get("state")
    mine = run_id in limits.training_owned(limits.visitor())
    if state in ("queued", "running") and not mine:
        st.caption("Started by another visitor: only they can stop it.")
    if cols[0].button("Stop", disabled=state not in ("queued", "running") or not mine, key="train_stop"):
        jobs.stop(run_id)
        st.info("Stop requested: the run checkpoints and stops within one step.")
    if cols[1].button("Resume", disabled=state not in ("stopped", "failed"), key="train_resume"):
        try:
            with limits.training_start(limits.visitor(), _active_runs) as record:
                jobs.resume(run_id)
                record(run_id)
            st.info("Resumed from the last checkpoint.")
        except (ValueError, limits.ServerBusy) as e:
            st.error(str(e))
    weights = jobs.weights_path(run_id)
    if cols[2].button("Use this model", disabled=weights is None, key="train_use"):
        cfg = next(r["config"] for r in jobs.list_runs() if r["run_id"] == run_id)
        method = cfg.get("family", "voxelmorph")  # every family registers a method of the same name
        st.session_state["register_method"] = method
        st.session_state["register_overrides"] = {"checkpoint": str(weights.resolve())}
        st.success(f"The Register page will use {method} with {weights.name} from run {run_id}.")


@st.fragment(run_every=2.0)
def live_view(run_id: str) -> None:
    """Status, curves and previews of one run; re-drawn every 2 s while the page is open."""
    try:
        status = jobs.status(run_id)
    except ValueError as e:
        st.error(str(e))
        return
    state = status.get("state", "?")
    total = max(int(status.get("total_steps") or 1), 1)
    st.progress(min(int(status.get("step") or 0) / total, 1.0), text=f"{state}: {status.get('message', '')}")
    if state == "failed":
        st.error(f"Run failed: {status.get('message', '')}")
    recs = jobs.metrics(run_id)
    if recs:
        last = [r for r in recs if r.get("kind") == "epoch"]
        if last:
            c = st.columns(3)
            c[0].metric(
                "validation Dice",
                f"{last[-1]['val_dice']:.3f}",
                f"{last[-1]['val_dice'] - last[0]['val_dice_before']:+.3f} vs identity",
            )
            c[1].metric("folding %", f"{last[-1]['val_folding_percent']:.2f}")
            c[2].metric("epoch", f"{last[-1]['epoch']}")
        st.plotly_chart(curves([run_id]), key=f"train_curves_{run_id}")
    else:
        st.caption("Waiting for the first metrics...")
    pngs = jobs.previews(run_id)
    if pngs:
        idx = len(pngs) - 1
        if len(pngs) > 1:
            idx = st.slider("preview epoch", 1, len(pngs), len(pngs), key=f"train_preview_{run_id}") - 1
        st.image(str(pngs[idx]), caption=f"validation pair, {pngs[idx].stem.replace('_', ' ')}")
    run_controls(run_id, status)


def main() -> None:
    st.title("Train a registration network")
    st.caption(
        "Every learned family in RegLab; unsupervised, weakly, fully or dual supervised. "
        "Runs train in the background and survive a refresh; pick one below to watch it live."
    )
    with st.expander("New run", expanded=not jobs.list_runs()):
        config_form()
    runs = jobs.list_runs()
    if not runs:
        st.info("No runs yet: start one above (the quick demo takes about half a minute).")
        return
    st.subheader("Runs")
    runs_table(runs)
    ids = [r["run_id"] for r in runs]
    selected = st.session_state.get("train_selected")
    choice = st.selectbox(
        "Watch run", ids, index=ids.index(selected) if selected in ids else 0, key="train_watch"
    )
    st.session_state["train_selected"] = choice
    live_view(choice)
    st.subheader("Compare runs")
    pick = st.multiselect(
        "Two runs",
        ids,
        default=[i for i in st.session_state.get("train_compare", []) if i in ids],
        max_selections=2,
        key="train_compare_pick",
    )
    st.session_state["train_compare"] = pick
    if len(pick) == 2:
        st.plotly_chart(curves(pick), key="train_compare_chart")
        cfgs = {r["run_id"]: r["config"] for r in runs if r["run_id"] in pick}
        diff = {
            k: [cfgs[p].get(k) for p in pick]
            for k in cfgs[pick[0]]
            if cfgs[pick[0]].get(k) != cfgs[pick[1]].get(k)
        }
        if diff:
            st.dataframe(pd.DataFrame(diff, index=pick).T.astype(str))


state.run_page(main, "train")
