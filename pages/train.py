"""Train page: configure and launch training runs, watch them live, stop/resume, compare, use.

Thin: all work happens in ``regcore.train.jobs`` (background processes writing to runs/<id>/).
Only run ids live in ``st.session_state`` ("train_selected", "train_compare"); everything else
is read back from disk, so a browser refresh or an app restart loses nothing.
"""

from __future__ import annotations

import enum
from dataclasses import replace

import streamlit as st

from pages import _limits as limits
from pages import _roots as server_roots
from pages import _state as state
from pages import _train_views as views
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
    label, help_ = views.field_label(spec.name), spec.help
    if spec.name == "data":  # the data sources, plus the session's own pair
        options = [c.value for c in spec.choices] + [views.PAIR_DATA]
        default = spec.default.value if isinstance(spec.default, enum.Enum) else spec.default
        return st.selectbox(
            label,
            options,
            index=options.index(default),
            format_func=lambda v: views.DATA_TITLES.get(v, v),
            help=help_ + " 'Current pair' trains on the pair chosen on the Data page (both directions).",
            key=key,
        )
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
            pair = None
            if values.get("data") == views.PAIR_DATA:  # jobs.start replaces the data source by the pair
                pair = state.current_pair()
                values.update(data="shapes", data_path="", dims=pair.fixed.ndim)
            if len(values.get("train_shape", [])) != values.get("dims"):
                fallback = (64, 80, 64) if values.get("dims") == 3 else TrainConfig.train_shape
                values["train_shape"] = list(fam.recipe(values["dims"]).get("train_shape", fallback))
            values["family_config"] = family_values
            _start(config_from_dict(values), pair)
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


def _start(config: TrainConfig, pair=None) -> None:
    """Start a run (on ``pair``, a regcore.data.Pair, when given) and make "Watch run" show it."""
    try:
        _check_paths(config)
        with limits.training_start(limits.visitor(), _active_runs) as record:
            run_id = jobs.start(config, pair=pair)
            record(run_id)
    except (OSError, ValueError, limits.ServerBusy) as e:
        st.error(f"Cannot start the run: {e}")
        return
    st.session_state["train_selected"] = run_id
    # set (not drop) the widget's value: the browser then shows the new run, not its last choice
    st.session_state["train_watch"] = run_id
    on = f" on {pair.name}" if pair is not None else ""
    st.success(f"Started run {run_id}{on}")


@st.fragment(run_every=2.0)
def runs_table() -> None:
    """All runs with their current state; re-read every 2 s so finished runs show as finished."""
    st.dataframe(views.runs_rows(jobs.list_runs()), hide_index=True)


def curves(run_ids: list[str]):
    """The loss and validation chart of one or more runs (see ``_train_views.curves``)."""
    return views.curves({run_id: jobs.metrics(run_id) for run_id in run_ids})


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
    st.progress(
        min(int(status.get("step") or 0) / total, 1.0),
        text=views.progress_text(state, status.get("message", "")),
    )
    if state == "failed":
        st.error(f"Run failed: {status.get('message', '')}")
    recs = jobs.metrics(run_id)
    if recs:
        last = [r for r in recs if r.get("kind") == "epoch"]
        if last:
            c = st.columns(3)
            label, value, delta = views.validation_metric(last)
            c[0].metric(
                label, value, delta, delta_color="inverse" if label == "Validation loss" else "normal"
            )
            c[1].metric("Folding %", f"{last[-1]['val_folding_percent']:.2f}")
            c[2].metric("Epoch", f"{last[-1]['epoch']}")
        st.plotly_chart(curves([run_id]), key=f"train_curves_{run_id}")
    else:
        st.caption("Waiting for the first metrics...")
    pngs = jobs.previews(run_id)
    if pngs:
        idx = len(pngs) - 1
        if len(pngs) > 1:
            idx = st.slider("Preview epoch", 1, len(pngs), len(pngs), key=f"train_preview_{run_id}") - 1
        st.image(str(pngs[idx]), caption=f"validation pair, {pngs[idx].stem.replace('_', ' ')}")
    with st.expander("Settings of this run"):
        config = next((r["config"] for r in jobs.list_runs() if r["run_id"] == run_id), {})
        st.dataframe(views.settings_table(config), hide_index=True)
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
    runs_table()
    ids = [r["run_id"] for r in runs]
    if st.session_state.get("train_watch") not in ids:
        selected = st.session_state.get("train_selected")
        st.session_state["train_watch"] = selected if selected in ids else ids[0]
    choice = st.selectbox("Watch run", ids, key="train_watch")
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
        diff = views.settings_diff({p: cfgs[p] for p in pick})
        if not diff.empty:
            st.caption("Settings that differ")
            st.dataframe(diff, hide_index=True)


state.run_page(main, "train")
