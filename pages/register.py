"""Register: pick a method from the registry, set its parameters, run with progress and cancel."""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from pages import _backend as backend
from pages import _limits as limits
from pages import _roots as server_roots
from pages import _state as state
from pages import _tables as tables
from pages import _widgets as widgets
from regcore import viz
from regcore.methods.base import RegistrationCancelled


def _swap(pair):
    return replace(
        pair,
        name=f"{pair.name} (swapped)",
        fixed=pair.moving,
        moving=pair.fixed,
        fixed_labels=pair.moving_labels,
        moving_labels=pair.fixed_labels,
        fixed_landmarks=pair.moving_landmarks,
        moving_landmarks=pair.fixed_landmarks,
        true_displacement=None,
    )


def _choose_method(pair):
    dims = pair.fixed.ndim
    specs = backend.method_specs()
    chosen = st.session_state.get("register_method")
    wanted = chosen or state.default_method(dims, pair)
    reason = "" if chosen else state.default_choice(pair).reason
    families = sorted({str(s.family) for s in specs})
    fam_default = next((str(s.family) for s in specs if s.name == wanted), None)
    c1, c2 = st.columns(2)
    family = c1.selectbox(
        "Method family",
        families,
        index=families.index(fam_default) if fam_default in families else 0,
        key="reg_family",
    )
    in_family = [s for s in specs if str(s.family) == family]
    reasons = {s.name: backend.spec_unavailable_reason(s, dims) for s in in_family}
    names = [s.name for s in in_family]
    default = (
        names.index(wanted)
        if wanted in names
        else next((i for i, n in enumerate(names) if reasons[n] is None), 0)
    )
    fmt = {
        s.name: s.title + (f"  (unavailable: {reasons[s.name]})" if reasons[s.name] else "")
        for s in in_family
    }
    name = c2.selectbox("Method", names, index=default, format_func=fmt.get, key="reg_method")
    if reason and name == wanted:
        st.caption(f"Default for this pair: {wanted}, because {reason}.")
    spec = in_family[names.index(name)]
    return spec, reasons[name]


def _progress_callback(bar, status, holder: dict):
    """Progress callback for regcore methods: draws the bar; returns False when the user interrupted."""

    def callback(p) -> bool:
        try:
            bar.progress(float(p.fraction), text=p.message or f"{p.fraction:.0%}")
            if p.losses:
                status.caption("  ·  ".join(f"{k} {viz.format_number(v)}" for k, v in p.losses.items()))
        except ScriptControlException as interrupt:  # Cancel (or any widget) was clicked: stop cleanly
            holder["interrupt"] = interrupt
            return False
        return True

    return callback


INITIAL_TITLES = {
    "none": "Nothing (already aligned)",
    "rigid": "Rigid stage (MI)",
    "affine": "Affine stage (MI)",
}


def default_initial(spec, pair) -> str:
    """Deformable classical methods on real data (no known true field) start after an affine stage, as ANTs
    and elastix do; affine methods, baselines with their own stages, learned models and samples start as they are."""
    from regcore.methods.registry import Family

    deformable = spec.family in (Family.DEFORMABLE, Family.DIFFEOMORPHIC)
    return "affine" if deformable and not pair.has_ground_truth else "none"


def _run(pair, spec, overrides: dict, device: str, label: str, initial: str = "none") -> None:
    holder: dict = {}
    c1, c2 = st.columns([5, 1])
    bar = c1.progress(0.0, text=f"Starting {spec.title} ...")
    cancel_slot = c2.empty()
    cancel_slot.button("Cancel", key="reg_cancel", icon=":material/stop_circle:", width="stretch")
    status = st.empty()

    def queued(position: int) -> None:
        bar.progress(0.0, text=f"Waiting for a free slot on the server ({position} ahead of you) ...")

    t0 = time.perf_counter()
    try:
        with limits.RUNS.slot(limits.client_keys(), on_wait=queued):  # server-wide and per-visitor limits
            result, metrics = backend.run_registration(
                pair, spec.name, overrides, _progress_callback(bar, status, holder), device, initial
            )
    except RegistrationCancelled:
        if "interrupt" in holder:
            raise holder["interrupt"] from None  # let Streamlit process the click that cancelled us
        st.warning("Registration cancelled.")
        return
    bar.progress(1.0, text=f"Done in {time.perf_counter() - t0:.1f} s")
    cancel_slot.empty()
    used = state.add_run(label or spec.name, result, metrics, pair)
    st.session_state["last_run"] = used
    st.success(f"Saved as run **{used}**. Compare it on the Evaluate page.", icon=":material/check_circle:")
    widgets.before_after_metrics(state.runs()[used], f"{spec.title} on {metrics.get('device', device)}")
    stages = result.extras.get("stages")
    if stages:
        st.caption(
            "Pipeline: "
            + " -> ".join(f"{s['stage']} ({s['method']}, {s['runtime_s']:.1f} s)" for s in stages)
        )
    from regcore.metrics.worsening import worse_than_before

    for message in worse_than_before(state.runs()[used].before_metrics, metrics):
        st.warning(
            message
            + " Look at it on the Evaluate page (Contours); try an affine stage first, another method or "
            "similarity, or check the pair.",
            icon=":material/trending_down:",
        )


def _runs_table() -> None:
    runs = state.runs()
    if not runs:
        return
    st.subheader("Runs in this session")
    rows = []
    for label, r in runs.items():
        m = r.metrics
        rows.append(
            {
                "Run": label,
                "Pair": r.pair_name,
                "Method": r.method,
                tables.DICE_IN_BOTH: tables.mean_dice(r, m, include_all=False),
                viz.metric_title("tre_mean_mm"): m.get("tre_mean_mm"),
                viz.metric_title("folding_percent"): m.get("folding_percent"),
                viz.metric_title("runtime_s"): m.get("runtime_s", r.result.runtime_s),
            }
        )
    tables.show(pd.DataFrame(rows), hide_index=True, width="stretch")
    c1, c2 = st.columns([3, 1])
    drop = c1.multiselect("Remove runs", list(runs), key="reg_drop")
    if c2.button("Remove", disabled=not drop, key="reg_drop_btn"):
        state.remove_runs(drop)
        st.rerun()
    st.page_link("pages/evaluate.py", label="Evaluate & compare these runs", icon=":material/compare:")


def body() -> None:
    state.ensure_state()
    st.title("Register")
    pair = state.current_pair()
    st.markdown(
        f'<p class="rl-lead">Pair: <b>{pair.name}</b> ({pair.fixed.ndim}D). Change it on the Data page.</p>',
        unsafe_allow_html=True,
    )
    widgets.blank_image_warnings(pair)
    if st.toggle("Swap fixed and moving", key="reg_swap"):
        pair = _swap(pair)
    spec, reason = _choose_method(pair)
    if spec.description:
        with st.expander("How it works", expanded=spec.family == "learned"):
            st.markdown(spec.description + (f"\n\n*Paper:* {spec.paper}" if spec.paper else ""))
    preset = {}
    if st.session_state.get("register_method") == spec.name:
        preset = dict(st.session_state.get("register_overrides") or {})
        if preset:
            shown = ", ".join(f"{k.replace('_', ' ')} = {v}" for k, v in preset.items())
            st.info(f"Using settings from the Train page: {shown}", icon=":material/model_training:")
    with st.container(border=True):
        params = backend.describe_params(spec)
        overrides = widgets.param_widgets(
            params, preset, key=f"reg_p_{spec.name}", resolved=lambda values: _auto_values(spec, values, pair)
        )
        for k, v in preset.items():  # e.g. a checkpoint path that has no widget
            overrides.setdefault(k, v)
        note = _auto_note(spec, overrides, pair, params)
        if note:
            st.caption(note)
        warning = _contrast_warning(spec, overrides, pair)
        if warning:
            st.warning(warning, icon=":material/contrast:")
        c1, c2 = st.columns(2)
        device = "auto"
        if not any(p.name == "device" for p in params):  # the config's own device field wins
            devices = ["auto", "cpu"] + (["cuda"] if _cuda() else [])
            device = c1.selectbox("Device", devices, key="reg_device")
        suggested = state.suggested_run_name(spec.name, overrides.get("checkpoint"))
        typed = c2.text_input(
            "Run name",
            key=f"reg_label_{spec.name}",
            placeholder=suggested,
            help=f"Empty: the run is called {suggested!r} (the method, and the checkpoint when one is chosen).",
        )
        label = typed.strip() or suggested
        initial = "none"
        if spec.family != "affine":
            stages = list(INITIAL_TITLES)
            initial = st.selectbox(
                "Start with",
                stages,
                index=stages.index(default_initial(spec, pair)),
                format_func=INITIAL_TITLES.get,
                key=f"reg_initial_{spec.name}",
                help="Deformable methods expect roughly aligned anatomy: a rigid or affine stage (regcore's "
                "MI affine method) runs first and the two transforms are composed into one.",
            )
    if reason:
        st.warning(f"{spec.title} cannot run here: {reason}.", icon=":material/block:")
    if st.button(
        "Run registration", type="primary", disabled=bool(reason), key="reg_run", icon=":material/play_arrow:"
    ):
        try:
            spec.make_config(overrides)  # validate before starting
            if overrides.get("checkpoint"):  # weights only from the server's allowed folders
                server_roots.check_model_path(str(overrides["checkpoint"]))
        except (TypeError, ValueError) as e:
            st.error(f"Invalid parameters: {e}")
        else:
            try:
                _run(pair, spec, overrides, device, label, initial)
            except limits.ServerBusy as e:
                st.warning(str(e), icon=":material/hourglass_top:")
    elif st.session_state.get("reg_cancel"):
        st.warning("Registration cancelled; nothing was saved.", icon=":material/stop_circle:")
    _runs_table()


def _auto_values(spec, overrides: dict, pair) -> dict:
    """The settings the method's "auto" values take on this pair (``MethodSpec.auto_settings``); empty when
    none is auto or the values are invalid (the Run button reports those)."""
    config = _valid_config(spec, overrides)
    if spec.auto_settings is None or config is None:
        return {}
    try:
        return spec.auto_settings(config, tuple(pair.fixed.shape), pair.fixed.spacing)
    except (TypeError, ValueError):
        return {}


def _valid_config(spec, overrides: dict):
    """The method's config from ``overrides``, or None when they are invalid (the Run button reports why)."""
    try:
        return spec.make_config(overrides)
    except (TypeError, ValueError):
        return None


def _auto_note(spec, overrides: dict, pair, params: list) -> str:
    """One caption naming what "auto" resolves to on this pair ("" when nothing is auto)."""
    settings = _auto_values(spec, overrides, pair)
    from_contrast, change_it = _auto_contrast(spec, overrides, pair)
    if not settings and not from_contrast:
        return ""

    def shown(v) -> str:
        return ", ".join(str(x) for x in v) if isinstance(v, (tuple, list)) else str(v)

    facts = " · ".join(
        [f"{widgets.param_title(k).lower()} {shown(v)}" for k, v in settings.items()]
        + ([from_contrast] if from_contrast else [])
    )
    size = " × ".join(str(n) for n in pair.fixed.shape)
    greyed = [p.name for p in params if p.name in settings and widgets.greyed_under_auto(p)]
    how = []
    if settings:
        how.append(
            "The greyed-out boxes show these values; switch auto off to edit them."
            if greyed
            else "Fill in those boxes to choose other values."
        )
    if change_it:
        how.append(change_it)
    return f"Auto on this pair ({size} voxels): {facts}. {' '.join(how)}"


def _auto_contrast(spec, overrides: dict, pair) -> tuple[str, str]:
    """(fact, how to change it) for a setting that "auto" takes from the pair's contrast test: demons'
    ``features``, the ``similarity`` of dense / svf / bspline / fireants (and fireants' wider field smoothing with
    MIND); ("", "") for other methods or explicit choices."""
    config = _valid_config(spec, overrides)
    if config is None:
        return "", ""
    from regcore.methods.classical import contrast

    r = state.default_choice(pair).correlation
    if str(getattr(config, "features", "")) == "auto":
        from regcore.losses.mind import describe_scale
        from regcore.methods.classical.demons_features import describe_choice

        fact = f"compares {describe_choice(r)}"
        if contrast.contrasts_differ(r):
            fact += f"; {describe_scale(pair.fixed.spacing)}"
        elif getattr(config, "bias_correction", False):
            fact += "; each image's MR bias field is removed first (N4, bias correction)"
        return fact, "Set features to choose what it compares."
    if str(getattr(config, "similarity", "")) == contrast.AUTO:
        chosen = contrast.similarity_for(r)
        fact = f"similarity {chosen}, because {contrast.contrast_reason(r)}"
        if contrast.contrasts_differ(r):  # MIND, at the pair's physical scale
            from regcore.losses.mind import describe_scale

            fact += f"; {describe_scale(pair.fixed.spacing)}"
        if spec.name == "fireants":
            from regcore.methods.classical.fireants import MIND_FIELD_SMOOTHING, field_sigma

            sigma = field_sigma(config, chosen)
            if sigma != config.smooth_warp_sigma:
                fact += f"; with MIND the field is smoothed {MIND_FIELD_SMOOTHING:g}x wider (sigma {sigma:g} voxels)"
        return fact, "Set similarity to choose another."
    return "", ""


def _contrast_warning(spec, overrides: dict, pair) -> str:
    """One line when the pair's contrasts differ and the chosen settings compare intensities (demons'
    ``features=intensity``, an explicit ``lncc`` ...); "" otherwise."""
    config = _valid_config(spec, overrides)
    if config is None:
        return ""
    from regcore.methods.classical import contrast

    r = state.default_choice(pair).correlation
    if not contrast.contrasts_differ(r):
        return ""
    similarity, features = str(getattr(config, "similarity", "")), str(getattr(config, "features", ""))
    if features == "intensity":
        compared = "intensities (features = intensity)"
    elif similarity in contrast.INTENSITY_SIMILARITIES:
        compared = f"intensities (similarity = {similarity})"
    else:
        return ""
    return (
        f"This pair's contrasts differ: {contrast.contrast_reason(r)}. {spec.title} compares {compared}, "
        "which can pull edges onto the wrong edges; demons, fireants, dense, svf and bspline compare MIND descriptors "
        "here when left on auto, and mi also works across contrasts."
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


state.run_page(body, "register")
