"""The Evaluate page's "Uncertainty" section: pick a run, a method and an estimator, compute (with a
spinner), then show the predicted-std / variance map over the fixed image, the label entropy and, when
the pair's truth is known, the Spearman correlation and the reliability plot; export NIfTI and CSV.

Every number comes from :mod:`regcore.uncertainty`; this module only draws. Results are cached in
``st.session_state["uncertainty"]`` (with their figures), so a rerun redraws without recomputing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from pages import _backend as backend
from regcore import uncertainty as unc
from regcore.uncertainty import export, figures, sampling

STATE_KEY = "uncertainty"
KEPT = 4
"""Estimates a session keeps (the most recent)."""
ENSEMBLE_PARTNERS = ("fireants", "sitk_demons", "demons")
DEFAULT_ESTIMATOR = "ensemble"
"""The estimator the page opens on: on sample pairs never tuned on, an ensemble of two methods ranks the voxels by
their actual error (Spearman 0.57-0.59), test-time augmentation of one method barely does (0.08-0.27;
benchmarks/results/uncertainty.md)."""


def _methods(dims: int) -> list[str]:
    """Registry methods that run on this pair without training."""
    return [
        s.name
        for s in backend.method_specs()
        if not s.needs_training and backend.spec_unavailable_reason(s, dims) is None
    ]


def _store() -> dict:
    return st.session_state.setdefault(STATE_KEY, {})


def _compute(run, estimator: str, method: str, methods: list[str], members: int, checkpoint: str):
    bar = st.progress(0.0, text="starting")

    def progress(fraction: float, message: str) -> None:
        bar.progress(fraction, text=message)

    with st.spinner(f"Estimating uncertainty ({estimator}, {members} members) ..."):
        result = unc.estimate_uncertainty(
            run.pair,
            estimator,
            method=method,
            methods=methods or None,
            members=members,
            checkpoint=checkpoint,
            progress=progress,
        )
    bar.empty()
    return result


def _figure(entry: dict, key: str):
    """The entry's figure for map ``key``, built once and cached with the result."""
    figs = entry.setdefault("figures", {})
    if key not in figs:
        figs[key] = (
            figures.reliability_figure(entry["result"])
            if key == "reliability"
            else figures.map_figure(entry["result"], key)
        )
    return figs[key]


def _nifti(result, values, name: str):
    def produce() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "map.nii.gz"
            backend.save_image(export.map_image(result, values, name), path)
            return path.read_bytes()

    return produce


def _exports(result, stem: str) -> None:
    files = [
        ("Variance (NIfTI, mm²)", _nifti(result, result.variance_mm2, "variance_mm2"), "variance.nii.gz"),
        ("Std (NIfTI, mm)", _nifti(result, result.std_mm, "std_mm"), "std.nii.gz"),
    ]
    if result.label_entropy_bits is not None:
        files.append(
            (
                "Label entropy (NIfTI, bits)",
                _nifti(result, result.label_entropy_bits, "entropy"),
                "label_entropy.nii.gz",
            )
        )
    files.append(("Maps (CSV)", lambda: export.maps_csv(result).encode(), "uncertainty_maps.csv"))
    if result.calibration is not None:
        files.append(
            ("Reliability (CSV)", lambda: export.reliability_csv(result).encode(), "reliability.csv")
        )
    files.append(("Summary (JSON)", lambda: export.summary_json(result).encode(), "uncertainty_summary.json"))
    cols = st.columns(len(files))
    for col, (label, data, name) in zip(cols, files):
        col.download_button(
            label,
            data,
            file_name=f"{stem}_{name}",
            key=f"unc_dl_{name}",
            icon=":material/download:",
            width="stretch",
        )


def render(runs: dict, focus: str) -> None:
    """Draw the Uncertainty section for this session's ``runs`` (``{label: RunRecord}``), ``focus`` first."""
    st.subheader("Uncertainty")
    st.caption(
        "How sure is the registration? Several answers for the same pair (altered copies, several methods, "
        "or a probabilistic network's samples) are compared voxel by voxel: where they disagree, trust less."
    )
    labels = list(runs)
    c = st.columns([2, 2, 2, 1])
    label = c[0].selectbox("Run", labels, index=labels.index(focus) if focus in labels else 0, key="unc_run")
    run = runs[label]
    estimators = [e.value for e in unc.Estimator]
    estimator = c[1].selectbox(
        "Estimator",
        estimators,
        index=estimators.index(DEFAULT_ESTIMATOR),
        format_func=lambda e: unc.estimate.ESTIMATOR_HELP[unc.Estimator(e)].split(":")[0],
        key="unc_estimator",
    )
    available = _methods(run.pair.fixed.ndim)
    preferred = [m for m in (run.method, *ENSEMBLE_PARTNERS) if m in available]
    default = preferred[0] if preferred else (available[0] if available else "")
    method, methods, checkpoint, shipped = default, [], "", False
    if estimator == unc.Estimator.TTA:
        method = c[2].selectbox(
            "Method",
            available,
            index=available.index(default) if default in available else 0,
            key="unc_method",
        )
    elif estimator == unc.Estimator.ENSEMBLE:
        partner = next((m for m in ENSEMBLE_PARTNERS if m in available and m != default), None)
        methods = c[2].multiselect(
            "Methods", available, default=[m for m in (default, partner) if m], key="unc_methods"
        )
        method = methods[0] if methods else default
    else:
        found = sampling.trained_checkpoints(run.pair.fixed.ndim)
        shipped = sampling.shipped_checkpoint(run.pair.fixed.ndim)
        checkpoint = c[2].text_input(
            "prob_voxelmorph checkpoint",
            value=found[0] if found else "",
            key="unc_checkpoint",
            placeholder="empty = the shipped weights" if shipped else "runs/<id>/model.pt",
            help="Weights from `regcore train` (family prob_voxelmorph); runs found here: "
            + (", ".join(found) if found else "none")
            + ("; empty = the shipped weights" if shipped else ""),
        )
    members = c[3].number_input("Members", min_value=2, max_value=16, value=4, step=1, key="unc_members")
    st.caption(unc.estimate.ESTIMATOR_HELP[unc.Estimator(estimator)])
    key = (label, estimator, method, tuple(methods), int(members), checkpoint)
    store = _store()
    if st.button("Estimate uncertainty", key="unc_compute", icon=":material/blur_on:", type="primary"):
        if estimator == unc.Estimator.ENSEMBLE and not methods:
            st.warning("Pick at least one method for the ensemble.")
            return
        if estimator == unc.Estimator.SAMPLING and not checkpoint and not shipped:
            st.warning(
                "The sampling estimator needs a trained prob_voxelmorph checkpoint (none shipped for this "
                "dimension): "
                "train one on the Train page or with `regcore train`, then paste its model.pt path."
            )
            return
        result = _compute(run, estimator, method, methods, int(members), checkpoint)
        store.pop(key, None)
        while len(store) >= KEPT:
            store.pop(next(iter(store)))
        store[key] = {"result": result}
    entry = store.get(key)
    if entry is None:
        st.info("Press **Estimate uncertainty** to compute the maps for this run and estimator.")
        return
    _show(entry, label)


def _show(entry: dict, label: str) -> None:
    result = entry["result"]
    s = result.summary()
    st.caption(
        f"{result.estimator} of {result.method}: {len(result.members)} members in {result.runtime_s:.1f} s; "
        f"mean predicted std in the foreground {s['std_mm_mean_foreground']:.2f} mm. Colours top out at the "
        "foreground's 99th percentile (the background, where nothing constrains the field, can go far higher)."
    )
    which = st.segmented_control(
        "Map", ["std", "variance"], default="std", key="unc_map", format_func=lambda k: figures.MAPS[k][0]
    )
    cols = st.columns(2)
    cols[0].plotly_chart(_figure(entry, which or "std"), width="stretch", key="unc_map_fig")
    if result.label_entropy_bits is not None:
        cols[1].plotly_chart(_figure(entry, "entropy"), width="stretch", key="unc_entropy_fig")
    else:
        cols[1].caption("No moving labels on this pair: no label-probability or entropy map.")
    cal = result.calibration
    if cal is not None:
        m = st.columns([1, 2])
        m[0].metric(
            "Spearman: predicted std vs actual error",
            f"{cal.spearman:.3f}",
            help="Rank correlation inside the foreground; > 0 means the uncertainty is higher where the error is.",
        )
        m[0].metric("Mean actual error (foreground)", f"{cal.mean_error_mm:.2f} mm")
        m[0].caption(f"{cal.voxels} foreground voxels; truth = the sample pair's known displacement.")
        m[1].plotly_chart(_figure(entry, "reliability"), width="stretch", key="unc_reliability_fig")
    else:
        st.caption("The true displacement of this pair is unknown: no calibration (sample pairs have it).")
    _exports(result, "".join(ch if ch.isalnum() else "_" for ch in label))
