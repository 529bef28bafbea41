"""Data: choose sample data, a server folder or uploads; inspect the pair before registering."""

from __future__ import annotations

import streamlit as st

from pages import _backend as backend
from pages import _roots as server_roots
from pages import _state as state
from pages import _widgets as widgets

# Single-file formats only: a detached .mhd/.nhdr header cannot bring its data file in an upload.
IMAGE_TYPES = ["nii", "gz", "mha", "nrrd", "zip"]
MAX_CSV_BYTES = 4 * 1024**2
UPLOADER_KEYS = {
    "fixed": "up_fixed",
    "moving": "up_moving",
    "fixed_labels": "up_fixed_labels",
    "moving_labels": "up_moving_labels",
    "fixed_landmarks": "up_fixed_lm",
    "moving_landmarks": "up_moving_lm",
    "names": "up_names",
}
"""The upload widgets' keys by role."""


def _sample_source() -> None:
    datasets = backend.list_sample_datasets()
    c1, c2, c3 = st.columns([2, 1, 1])
    dataset = c1.selectbox("Sample dataset", datasets, key="data_sample_ds")
    dims = int(c2.radio("Dimensions", ["2D", "3D"], horizontal=True, key="data_sample_dims")[0])
    contrast = c3.selectbox(
        "Moving contrast",
        ["t1", "t2"],
        key="data_sample_contrast",
        help="t2 makes a multimodal pair (needs MI/NCC-type similarity).",
    )
    if st.button("Use this sample pair", type="primary", key="data_use_sample"):
        with st.spinner("Loading sample pair ..."):
            state.set_pair(state.cached_sample_pair(dataset, dims, contrast))
        st.toast(f"Loaded {st.session_state['pair'].name}")


def _folder_source() -> None:
    roots = server_roots.data_roots()
    if not roots:
        st.info(
            f"No data folder is configured on this server. {server_roots.HOW_TO_ADD}", icon=":material/info:"
        )
        return
    st.caption(
        "Folders on this server that RegLab may read: "
        + ", ".join(f"`{r}`" for r in roots)
        + f". {server_roots.HOW_TO_ADD}"
    )
    c1, c2 = st.columns([1, 2])
    root = c1.selectbox("Data folder", [str(r) for r in roots], key="data_root")
    path = c2.text_input(
        "Folder inside it",
        value="",
        key="data_folder_path",
        help="A folder of NIfTI/MHA images with labels/landmarks, relative to the data folder "
        "(or an absolute path inside one).",
    )
    if st.button("Scan folder", key="data_scan"):
        folder = server_roots.resolve_folder(root, path)
        with st.spinner("Scanning ..."), server_roots.confined():  # nothing outside the roots is read
            ds = backend.load_folder(str(folder))
            st.session_state["folder_pairs"] = list(ds.pairs())
            st.session_state["folder_errors"] = list(getattr(ds, "errors", []))
    pairs = st.session_state.get("folder_pairs") or []
    for err in st.session_state.get("folder_errors") or []:
        st.warning(str(err))
    if pairs:
        names = [p.name for p in pairs]
        choice = st.selectbox("Pair", names, key="data_folder_pair")
        if st.button("Use this pair", type="primary", key="data_use_folder"):
            state.set_pair(pairs[names.index(choice)])
            st.toast(f"Loaded {choice}")


def _upload_source() -> None:
    from pages import _limits as limits

    st.caption(
        "NIfTI, MHA/NRRD, or a zipped DICOM series; labels as an integer image; landmarks as CSV "
        f"`id,x,y[,z]` in mm (LPS). Up to {limits.max_upload_bytes() // 1024**2} MiB and "
        f"{limits.max_upload_voxels() / 1e6:,.0f} million voxels per image."
    )
    drawn_before = {k for k in UPLOADER_KEYS.values() if k in st.session_state}  # not there: page was left
    c1, c2 = st.columns(2)
    up = {
        "fixed": c1.file_uploader("Fixed image", type=IMAGE_TYPES, key=UPLOADER_KEYS["fixed"]),
        "moving": c2.file_uploader("Moving image", type=IMAGE_TYPES, key=UPLOADER_KEYS["moving"]),
        "fixed_labels": c1.file_uploader(
            "Fixed labels (optional)", type=IMAGE_TYPES, key=UPLOADER_KEYS["fixed_labels"]
        ),
        "moving_labels": c2.file_uploader(
            "Moving labels (optional)", type=IMAGE_TYPES, key=UPLOADER_KEYS["moving_labels"]
        ),
        "fixed_landmarks": c1.file_uploader(
            "Fixed landmarks CSV (optional)", type=["csv"], key=UPLOADER_KEYS["fixed_landmarks"]
        ),
        "moving_landmarks": c2.file_uploader(
            "Moving landmarks CSV (optional)", type=["csv"], key=UPLOADER_KEYS["moving_landmarks"]
        ),
    }
    up["names"] = st.file_uploader(
        "Label names CSV (optional: value,name)", type=["csv"], key=UPLOADER_KEYS["names"]
    )
    up = _keep_chosen_files(up, drawn_before)
    names_file = up.pop("names")
    if not st.button("Use uploaded pair", type="primary", key="data_use_upload"):
        return
    if up["fixed"] is None or up["moving"] is None:
        raise ValueError("upload both a fixed and a moving image")
    parts = {}
    for k in ("fixed", "moving", "fixed_labels", "moving_labels"):
        f = up[k]
        if f is not None:
            parts[k] = state.decode_upload(f.name, f.getvalue(), "labels" if "labels" in k else "image")
    for k in ("fixed_landmarks", "moving_landmarks"):
        f = up[k]
        if f is not None and len(f.getvalue()) > MAX_CSV_BYTES:
            raise ValueError(
                f"{f.name} is larger than {MAX_CSV_BYTES // 1024**2} MiB; a landmark CSV is a few KiB"
            )
        if f is not None:
            geom = parts["fixed" if k.startswith("fixed") else "moving"].geometry
            parts[k] = state.decode_upload(f.name, f.getvalue(), "landmarks", geom)
    label_names = {}
    if names_file is not None:
        import io

        import pandas as pd

        if len(names_file.getvalue()) > MAX_CSV_BYTES:
            raise ValueError(
                f"{names_file.name} is larger than {MAX_CSV_BYTES // 1024**2} MiB; a label names CSV is "
                "a few KiB"
            )
        try:
            df = pd.read_csv(io.BytesIO(names_file.getvalue()))
            label_names = {int(v): str(n) for v, n in zip(df.iloc[:, 0], df.iloc[:, 1])}
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"could not read label names from {names_file.name!r}: {e}") from None
    name = f"{up['fixed'].name} <- {up['moving'].name}"
    state.set_pair(backend.make_pair(name=name, label_names=label_names, **parts))
    st.toast(f"Loaded {name}")


def _keep_chosen_files(chosen: dict, drawn_before: set[str]) -> dict:
    """The files chosen in each uploader (``{role: UploadedFile | None}``), kept while the visitor looks at
    other pages: Streamlit empties the uploaders of a page that was left (their keys are then missing from
    ``drawn_before``), and the file chosen earlier is used and listed instead. A file the visitor removed
    from an uploader that stayed on screen is forgotten."""
    kept = st.session_state.setdefault("data_chosen_files", {})
    for role, f in chosen.items():
        if f is not None:
            kept[role] = f
        elif UPLOADER_KEYS[role] in drawn_before:
            kept.pop(role, None)
    earlier = {role: f for role, f in kept.items() if chosen.get(role) is None}
    if earlier:
        st.caption(
            "Chosen earlier: "
            + ", ".join(f"{role.replace('_', ' ')}: `{f.name}`" for role, f in earlier.items())
        )
    return {role: chosen.get(role) or kept.get(role) for role in chosen}


def _inspect(pair) -> None:
    from pages._niivue_view import niivue_view

    st.subheader(f"Current pair: {pair.name}")
    widgets.blank_image_warnings(pair)
    warnings = backend.check_pair(pair.fixed, pair.moving)
    if warnings:
        st.warning(
            "Fixed and moving disagree - registration will resample moving onto the fixed grid:\n\n"
            + "\n".join(f"- {w}" for w in warnings),
            icon=":material/warning:",
        )
    else:
        st.success("Fixed and moving share grid, spacing and orientation.", icon=":material/check_circle:")
    facts = widgets.header_facts(
        {
            "fixed": pair.fixed,
            "moving": pair.moving,
            "fixed labels": pair.fixed_labels,
            "moving labels": pair.moving_labels,
        }
    )
    st.dataframe(facts, hide_index=True, width="stretch")
    viewer = "Slices"
    if pair.fixed.ndim == 3:
        viewer = st.segmented_control(
            "Viewer",
            ["Slices", "NiiVue 3D"],
            default="Slices",
            key="data_viewer",
            help="NiiVue: linked planes with a crosshair, orientation letters and a 3D render (WebGL).",
        )
    tab_f, tab_m = st.tabs(["Fixed", "Moving"])
    names = getattr(pair, "label_names", None) or {}
    for tab, role in ((tab_f, "fixed"), (tab_m, "moving")):
        image, labels = getattr(pair, role), getattr(pair, f"{role}_labels")
        with tab:
            if viewer == "NiiVue 3D":
                niivue_view(image, labels=labels, label_names=names, key=f"nv_{role}")
            else:
                widgets.triplanar_viewer(
                    image,
                    labels=labels,
                    label_names=names,
                    landmarks=getattr(pair, f"{role}_landmarks"),
                    key=f"view_{role}",
                )


BIAS_HELP = (
    "MR images are often brighter in one part than in another (receiver-coil shading), and the shading differs "
    "between scans. N4 estimates it as a smooth field. Demons removes it from both images before it compares "
    "intensities (its bias correction setting); LNCC (fireants, dense, svf, bspline) and MIND are not misled by it."
)


def _bias_fields(pair) -> None:
    """On request: N4's estimate of each image's coil shading, its range over the object and the field itself."""
    with st.expander("Intensity bias (MR coil shading)", icon=":material/gradient:"):
        st.caption(BIAS_HELP)
        if st.button("Estimate with N4", key="data_bias_estimate", icon=":material/search:"):
            try:
                fields = {role: backend.bias_field(getattr(pair, role)) for role in ("fixed", "moving")}
                ranges = {
                    role: backend.bias_field_range(getattr(pair, role), f) for role, f in fields.items()
                }
            except ValueError as e:  # negative intensities (CT in HU): no multiplicative model
                st.session_state.pop("data_bias", None)
                st.info(f"{e}.", icon=":material/info:")
                return
            st.session_state["data_bias"] = (pair.name, fields, ranges)  # computed once, shown on every rerun
        estimated = st.session_state.get("data_bias")
        if not estimated or estimated[0] != pair.name:
            return
        for tab, role in zip(st.tabs(["Fixed", "Moving"]), ("fixed", "moving")):
            field, (low, high) = estimated[1][role], estimated[2][role]
            with tab:
                st.markdown(
                    f"Over the object the shading runs from **{low:.2f}** to **{high:.2f}** times the mean "
                    f"brightness (1st to 99th percentile): one tissue reads up to {100 * (high / low - 1):.0f} % "
                    "brighter in one place than in another."
                )
                widgets.triplanar_viewer(field, key=f"bias_view_{role}", height=260)


def body() -> None:
    state.ensure_state()
    st.title("Data")
    st.markdown(
        '<p class="rl-lead">Pick a pair, then check its header facts: most registration bugs are '
        "spacing, origin or orientation mismatches.</p>",
        unsafe_allow_html=True,
    )
    st.session_state.setdefault(
        "data_source", "Sample data"
    )  # kept across pages and reloads (_session_store)
    source = st.segmented_control("Source", ["Sample data", "Server folder", "Upload"], key="data_source")
    with st.container(border=True):
        try:
            {"Server folder": _folder_source, "Upload": _upload_source}.get(source or "", _sample_source)()
        except Exception as e:  # noqa: BLE001 - bad input: message here, the current pair stays loaded
            st.error(f"{e}", icon=":material/error:")
    pair = state.current_pair()
    _inspect(pair)
    _bias_fields(pair)


state.run_page(body, "data")
