"""Multi-atlas segmentation: register labelled atlases to the target, fuse their labels, compare fusions."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from pages import _backend as backend
from pages import _limits as limits
from pages import _roots as server_roots
from pages import _state as state

FUSIONS = {
    "majority": "Majority vote",
    "staple": "STAPLE (SimpleITK)",
    "weighted": "Locally weighted vote",
    "learned": "Learned (VoteNet)",
}
SAMPLE, FOLDER = "Other sample subjects", "A server folder (images/ + labels/)"
RESULT_KEY = "segment_result"


@st.cache_resource(show_spinner="Loading sample subjects ...", max_entries=8)
def _sample_subjects(dataset: str, dims: int, resolution_mm: float) -> list:
    """``[(subject id, image, labels)]`` of a sample unit (shared read-only across sessions)."""
    from regcore.data.pairs import sample_pair
    from regcore.data.samples import ensure_unit, read_manifest

    manifest = read_manifest(ensure_unit(dataset, dims, resolution_mm, None)) or {}
    out = []
    for sid in manifest.get("subjects", []):
        p = sample_pair(dataset, dims, sid, sid, resolution_mm=resolution_mm)
        out.append((sid, p.fixed, p.fixed_labels))
    return out


def _target_and_sample_atlases(pair, max_atlases: int):
    """Target = the current sample pair's fixed subject; atlases = the unit's other subjects."""
    from regcore.segment.multi_atlas import Atlas

    meta = pair.meta or {}
    if meta.get("dataset") not in ("brain", "shapes") or not meta.get("fixed_subject"):
        st.info(
            "The current pair is not a sample pair, so the target here is sample brain subject_00 "
            "(2D). To segment your own image, pick a server folder of atlases below.",
            icon=":material/info:",
        )
        dataset, dims, res, target_id = "brain", 2, 2.0, "subject_00"
    else:
        dataset, dims, target_id = meta["dataset"], pair.ndim, meta["fixed_subject"]
        res = float(pair.fixed.spacing[0]) if dataset == "brain" else 1.0
    subjects = _sample_subjects(dataset, dims, res)
    target = next(((i, lab) for sid, i, lab in subjects if sid == target_id), None)
    if target is None:
        raise ValueError(f"sample subject {target_id!r} not found in the {dataset} {dims}D sample")
    atlases = [Atlas(sid, img, lab) for sid, img, lab in subjects if sid != target_id][:max_atlases]
    return f"{dataset} {dims}D {target_id}", target[0], target[1], atlases


def _folder_atlases(max_atlases: int):
    from regcore.segment.multi_atlas import Atlas

    roots = server_roots.data_roots()
    if not roots:
        st.info(
            f"No data folder is configured on this server. {server_roots.HOW_TO_ADD}", icon=":material/info:"
        )
        return None
    c1, c2 = st.columns([1, 2])
    root = c1.selectbox("Data folder", [str(r) for r in roots], key="seg_root")
    path = c2.text_input(
        "Atlas folder inside it", key="seg_folder", help="A folder with images/ and labels/."
    )
    if not st.button("Scan atlas folder", key="seg_scan"):
        return st.session_state.get("seg_folder_atlases")
    folder = server_roots.resolve_folder(root, path)
    with st.spinner("Scanning ..."), server_roots.confined():
        ds = backend.load_folder(str(folder))
    for err in getattr(ds, "errors", [])[:5]:
        st.warning(str(err))
    atlases = [Atlas(s.stem, s.image, s.labels) for s in ds.subjects if s.labels is not None][:max_atlases]
    if not atlases:
        st.error(f"{folder}: no labelled atlas (images/<stem>.* with labels/<stem>_seg.*)")
        return None
    st.session_state["seg_folder_atlases"] = atlases
    return atlases


def _methods(dims: int) -> list[str]:
    specs = backend.method_specs()
    return [
        s.name for s in specs if not s.needs_training and backend.spec_unavailable_reason(s, dims) is None
    ]


def _run(name, target, target_labels, atlases, method, fusions) -> None:
    from regcore.segment.multi_atlas import dice_summary, fuse_all, train_learned_fusion, warp_atlases

    t0 = time.perf_counter()
    with st.status(
        f"Registering {len(atlases)} atlases to the target ({method}) ...", expanded=True
    ) as status:
        bar = st.progress(0.0, text="Starting ...")

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(1.0, max(0.0, float(fraction))), text=message)

        with limits.RUNS.slot(limits.client_keys()):
            learned = None
            if "learned" in fusions:
                status.update(label="Training the learned fusion on atlas-to-atlas registrations ...")
                learned = train_learned_fusion(
                    atlases, method, max_targets=2, steps=150, time_limit_s=20.0, progress=progress
                )
            status.update(label=f"Registering {len(atlases)} atlases to the target ({method}) ...")
            warped, warnings = warp_atlases(
                target, atlases, method, target_labels=target_labels, engine="serial", progress=progress
            )
            status.update(label="Fusing labels ...")
            fused = fuse_all(target, warped, fusions, target_labels=target_labels, learned=learned)
        status.update(label=f"Done in {time.perf_counter() - t0:.1f} s", state="complete", expanded=False)
    names = dict(atlases[0].labels.label_names or {})
    rows = (
        dice_summary({k: d for k, (_, d) in fused.items()}, [w.dice or {} for w in warped], names)
        if target_labels is not None
        else []
    )
    st.session_state[RESULT_KEY] = {
        "name": name,
        "method": method,
        "target": target,
        "truth": target_labels,
        "fused": {k: f for k, (f, _) in fused.items()},
        "rows": rows,
        "atlas_dice": {w.name: (np.nanmean(list(w.dice.values())) if w.dice else None) for w in warped},
        "warnings": warnings,
        "label_names": names,
    }


def _show(res: dict) -> None:
    from regcore import viz

    st.subheader(f"Result: {res['name']} ({res['method']})")
    for w in res["warnings"]:
        st.warning(w)
    fusion = st.radio(
        "Show fusion",
        list(res["fused"]),
        format_func=lambda k: FUSIONS.get(k, k),
        horizontal=True,
        key="seg_show",
    )
    fused = res["fused"][fusion]
    target = res["target"]
    img = target.data[0].numpy()
    labels, agreement = fused.labels, fused.agreement
    axis = None
    if img.ndim == 3:
        axis = 2
        idx = st.slider("Slice", 0, img.shape[axis] - 1, img.shape[axis] // 2, key="seg_slice")
        img, labels, agreement = (np.take(a, idx, axis=axis) for a in (img, labels, agreement))
        truth = None if res["truth"] is None else np.take(res["truth"].data[0].numpy(), idx, axis=axis)
    else:
        truth = None if res["truth"] is None else res["truth"].data[0].numpy()
    flips = viz.image_flips(target, axis)
    panels = [
        viz.add_label_overlay(
            viz.image_figure(img, title=f"fused labels ({fusion})", flips=flips), labels, res["label_names"]
        ),
        viz.add_heat_overlay(
            viz.image_figure(img, title="per-voxel agreement", flips=flips),
            agreement,
            colorscale="Viridis",
            zmin=0.0,
            zmax=1.0,
            threshold=None,
            opacity=0.75,
            name="agreement",
        ),
    ]
    if truth is not None:
        panels.append(
            viz.add_label_overlay(
                viz.image_figure(img, title="target labels", flips=flips), truth, res["label_names"]
            )
        )
    st.plotly_chart(viz.panel_grid(panels), width="stretch", key="seg_panels")
    st.caption(
        "Agreement = the fused label's share of the vote (STAPLE: its posterior probability); low values mark "
        "where the atlases disagree, usually at structure boundaries."
    )
    if res["rows"]:
        st.subheader("Dice per structure: each fusion vs the best single atlas")
        df = pd.DataFrame(res["rows"]).drop(columns=["label"]).set_index("structure")
        st.dataframe(df.style.format("{:.3f}"), width="stretch", key="seg_table")
        mean = df.loc["mean"]
        best = max((k for k in res["fused"]), key=lambda k: mean[k])
        st.metric(
            f"Best fusion: {FUSIONS.get(best, best)}",
            f"{mean[best]:.3f}",
            f"{mean[best] - mean['best single atlas']:+.3f} vs best single atlas",
        )


def body() -> None:
    state.ensure_state()
    st.title("Multi-atlas segmentation")
    st.markdown(
        '<p class="rl-lead">Register several labelled images (atlases) to a target, carry their labels over, '
        "and let them vote. Fusing many atlases corrects the mistakes any one registration makes.</p>",
        unsafe_allow_html=True,
    )
    pair = state.current_pair()
    c1, c2 = st.columns(2)
    source = c1.radio("Atlases", [SAMPLE, FOLDER], key="seg_source")
    max_atlases = c2.slider("Number of atlases", 2, 20, 6, key="seg_n")
    if source == SAMPLE:
        name, target, target_labels, atlases = _target_and_sample_atlases(pair, max_atlases)
    else:
        name, target, target_labels = pair.name + " (fixed)", pair.fixed, pair.fixed_labels
        atlases = _folder_atlases(max_atlases)
    st.caption(
        f"Target: **{name}**; {len(atlases or [])} atlases"
        + ("" if target_labels is not None else " (no target labels: no Dice)")
    )
    methods = _methods(target.ndim)
    c1, c2 = st.columns(2)
    method = c1.selectbox(
        "Registration method",
        methods,
        index=methods.index("demons") if "demons" in methods else 0,
        key="seg_method",
    )
    fusions = c2.multiselect(
        "Fusions",
        list(FUSIONS),
        default=["majority", "staple", "weighted"],
        format_func=FUSIONS.get,
        key="seg_fusions",
    )
    if "learned" in fusions:
        st.caption(
            "The learned fusion first registers atlases to two other atlases and trains a small CNN "
            "on those pairs (the target is never seen): expect a few times the registration time."
        )
    if st.button(
        "Run multi-atlas segmentation",
        type="primary",
        key="seg_run",
        icon=":material/play_arrow:",
        disabled=not atlases or not fusions,
    ):
        try:
            _run(name, target, target_labels, atlases, method, fusions)
        except limits.ServerBusy as e:
            st.warning(str(e), icon=":material/hourglass_top:")
    res = st.session_state.get(RESULT_KEY)
    if res:
        _show(res)


state.run_page(body, "segment")
