"""Atlas: build an unbiased template from many subjects and watch it sharpen, iteration by iteration.

Thin: ``regcore.atlas`` loads the subjects, builds the template and measures it; this page picks the
inputs, shows the templates ``T_0 .. T_n`` and their sharpness / distance / Dice charts, and offers the
NIfTI downloads. The last result lives in ``st.session_state["atlas_result"]`` (this session only).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import _backend as backend
from pages import _limits as limits
from pages import _roots as server_roots
from pages import _state as state
from pages import _widgets as widgets

RESULT_KEY = "atlas_result"
SAMPLE = "Sample brain 2D subjects"
FOLDER = "A folder on the server"
DEFAULT_METHOD = "demons"
CLASSICAL = "Classical: register, average, un-bias"
LEARNED = "Learned (VoxelMorph-style)"
LEARNED_KEY = "atlas_learned"


@st.cache_resource(show_spinner="Loading the sample subjects ...", max_entries=4)
def _sample_subjects(n: int) -> list:
    """Read-only sample subjects shared by all sessions."""
    from regcore.atlas import load_sample_subjects

    return load_sample_subjects(n)


def _choose_subjects() -> list | None:
    source = st.radio("Subjects", [SAMPLE, FOLDER], horizontal=True, key="atlas_source")
    if source == SAMPLE:
        n = st.slider(
            "How many sample subjects",
            2,
            10,
            5,
            key="atlas_n",
            help="Synthetic deformations of one brain slice (2 mm), each with its label map.",
        )
        return _sample_subjects(int(n))
    roots = server_roots.data_roots()
    if not roots:
        st.warning(f"No data folder is configured on this server. {server_roots.HOW_TO_ADD}")
        return None
    c1, c2 = st.columns(2)
    root = c1.selectbox("Data folder", [str(r) for r in roots], key="atlas_root")
    text = c2.text_input(
        "Subfolder",
        value="",
        key="atlas_folder",
        help="A folder of images (or with images/ and labels/ subfolders); label maps are matched by name.",
    )
    pattern = st.text_input(
        "Only files matching (optional)",
        value="",
        key="atlas_pattern",
        placeholder="*_t1.nii.gz",
        help="A glob pattern inside the images folder, e.g. *_t1.nii.gz to leave out other contrasts.",
    )
    if not st.button("Load subjects", key="atlas_load"):
        return st.session_state.get("atlas_folder_subjects")
    from regcore.atlas import load_subjects

    try:
        if ".." in pattern or pattern.strip().startswith(("/", "\\")):
            raise ValueError(f"the file pattern must stay inside the folder, got {pattern!r}")
        folder = server_roots.resolve_folder(root, text)
        images = folder / "images" if (folder / "images").is_dir() else folder
        labels = folder / "labels" if (folder / "labels").is_dir() else None
        with st.spinner("Loading ..."), server_roots.confined():  # nothing outside the roots is read
            subjects = load_subjects(str(images / pattern.strip()) if pattern.strip() else images, labels)
    except (OSError, ValueError, TypeError) as e:
        st.error(f"Cannot load the subjects: {e}")
        return None
    st.session_state["atlas_folder_subjects"] = subjects
    return subjects


def _choose_method(dims: int):
    specs = [s for s in backend.method_specs() if not s.needs_training]
    usable = [s for s in specs if backend.spec_unavailable_reason(s, dims) is None]
    names = [s.name for s in usable]
    index = names.index(DEFAULT_METHOD) if DEFAULT_METHOD in names else 0
    c1, c2, c3 = st.columns(3)
    name = c1.selectbox(
        "Method",
        names,
        index=index,
        key="atlas_method",
        format_func=lambda n: next(s.title for s in usable if s.name == n),
        help="Any registry method registers every subject to the current template.",
    )
    iterations = c2.slider("Iterations", 1, 6, 3, key="atlas_iterations", help="Template updates.")
    init = c3.radio(
        "First template",
        ["affine", "mean"],
        key="atlas_init",
        help="affine: the mean of the subjects affinely aligned; mean: the plain mean.",
    )
    spec = usable[names.index(name)]
    with st.expander("Method settings"):
        overrides = widgets.param_widgets(backend.describe_params(spec), {}, key=f"atlas_p_{spec.name}")
    return spec, overrides, int(iterations), str(init)


def _build(subjects: list, spec, overrides: dict, iterations: int, init: str) -> None:
    from regcore.atlas import build_template

    with st.status(f"Building the template with {spec.title} ...", expanded=True) as status:
        bar = st.progress(0.0, text="Starting ...")

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

        def queued(position: int) -> None:
            bar.progress(0.0, text=f"Waiting for a free slot on the server ({position} ahead of you) ...")

        t0 = time.perf_counter()
        try:
            with limits.RUNS.slot(limits.client_keys(), on_wait=queued):
                result = build_template(
                    subjects, spec.name, iterations, overrides, init=init, progress=progress
                )
        except limits.ServerBusy as e:
            status.update(label=str(e), state="error")
            return
        except (ValueError, RuntimeError, TypeError) as e:
            status.update(label=f"Template building failed: {e}", state="error")
            st.error(str(e))
            return
        status.update(label=f"Template built in {time.perf_counter() - t0:.1f} s", state="complete")
    st.session_state[RESULT_KEY] = result


def _image_panels(result) -> None:
    from regcore import viz

    templates = result.templates
    rows = result.history
    ndim = templates[0].ndim
    axis = None if ndim == 2 else 2
    index = None if ndim == 2 else templates[0].shape[2] // 2
    flips = viz.image_flips(templates[0], axis)
    panels = []
    for image, it in zip(templates, rows, strict=False):
        arr = image.numpy() if ndim == 2 else viz.extract_slice(image.numpy(), axis, index)
        panels.append(
            viz.image_figure(arr, title=f"T{it.iteration}: sharpness {it.sharpness:.4f}", flips=flips)
        )
    st.plotly_chart(viz.panel_grid(panels, cols=min(len(panels), 4)), key="atlas_panels")
    if result.labels is not None:
        lab = result.labels.numpy() if ndim == 2 else viz.extract_slice(result.labels.numpy(), axis, index)
        last = templates[-1].numpy() if ndim == 2 else viz.extract_slice(templates[-1].numpy(), axis, index)
        st.plotly_chart(
            viz.slice_figure(
                last,
                labels=lab,
                label_names=result.labels.label_names,
                title="Final template with its label map (majority vote)",
                flips=flips,
            ),
            key="atlas_labels",
        )


def _charts(result) -> None:
    from regcore import viz

    df = pd.DataFrame(result.history_rows())
    x = df["iteration"].tolist()
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        viz.line_figure(
            x,
            {"sharpness": df["sharpness"].tolist()},
            title="Template sharpness",
            x_title="iteration",
            y_title="mean gradient magnitude (intensity / mm)",
            markers=True,
        ),
        key="atlas_sharpness",
    )
    measured = df.dropna(subset=["distance_mm"])
    c2.plotly_chart(
        viz.line_figure(
            measured["iteration"].tolist(),
            {"distance": measured["distance_mm"].tolist()},
            title="Mean subject-to-template distance",
            x_title="iteration",
            y_title="mean |displacement| (mm)",
            markers=True,
        ),
        key="atlas_distance",
    )
    if df["dice"].notna().any():
        dice = df.dropna(subset=["dice"])
        st.plotly_chart(
            viz.line_figure(
                dice["iteration"].tolist(),
                {"Dice": dice["dice"].tolist()},
                title="Mean Dice of the subjects' warped labels vs the template's label map",
                x_title="iteration",
                y_title="mean Dice",
                markers=True,
            ),
            key="atlas_dice",
        )
    st.dataframe(df, hide_index=True, width="stretch")


def _downloads(result) -> None:
    from regcore.atlas.cli import write_outputs

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_outputs(result, Path(tmp))
        files = {
            role: (paths[role].name, paths[role].read_bytes())
            for role in ("template", "template_labels", "history_csv", "history_json")
            if role in paths
        }
    cols = st.columns(len(files))
    for col, (role, (name, data)) in zip(cols, files.items(), strict=True):
        col.download_button(f"Download {name}", data, file_name=name, key=f"atlas_dl_{role}")


def _learned_section(subjects: list) -> None:
    from regcore import viz
    from regcore.atlas.learned import LearnedTemplateConfig, learn_template

    steps = st.slider("Training steps", 20, 1000, 300, step=20, key="atlas_steps")
    if st.button("Learn template", type="primary", key="atlas_learn", icon=":material/model_training:"):
        with st.status("Learning the template with its registration network ...", expanded=True) as status:
            bar = st.progress(0.0, text="Starting ...")
            try:
                with limits.RUNS.slot(limits.client_keys()):
                    result = learn_template(
                        subjects,
                        LearnedTemplateConfig(steps=int(steps)),
                        progress=lambda f, m: bar.progress(min(max(float(f), 0.0), 1.0), text=m),
                    )
            except (limits.ServerBusy, ValueError, RuntimeError) as e:
                status.update(label=f"Learning failed: {e}", state="error")
                return
            status.update(label=f"Template learned in {result.runtime_s:.1f} s", state="complete")
        st.session_state[LEARNED_KEY] = result
    result = st.session_state.get(LEARNED_KEY)
    if result is None:
        return
    c = st.columns(3)
    c[0].metric("sharpness (1/mm)", f"{result.sharpness:.4f}")
    c[1].metric("mean distance (mm)", f"{result.distance_mm:.2f}")
    c[2].metric("mean Dice", "-" if result.dice is None else f"{result.dice:.3f}")
    image = result.template
    arr = image.numpy() if image.ndim == 2 else viz.extract_slice(image.numpy(), 2, image.shape[2] // 2)
    flips = viz.image_flips(image, None if image.ndim == 2 else 2)
    left, right = st.columns(2)
    left.plotly_chart(viz.image_figure(arr, title="Learned template", flips=flips), key="atlas_learned_img")
    right.plotly_chart(
        viz.line_figure(
            list(range(1, len(result.loss) + 1)),
            {"loss": result.loss},
            title="Training loss",
            x_title="step",
            y_title="loss (MSE / sigma^2 + regularisers)",
        ),
        key="atlas_learned_loss",
    )
    with tempfile.TemporaryDirectory() as tmp:
        backend.save_image(result.template, Path(tmp) / "learned_template.nii.gz")
        data = (Path(tmp) / "learned_template.nii.gz").read_bytes()
    st.download_button(
        "Download learned_template.nii.gz", data, file_name="learned_template.nii.gz", key="atlas_dl_learned"
    )


def body() -> None:
    st.title("Atlas: build a template from many subjects")
    st.markdown(
        '<p class="rl-lead">Register every subject to the current template, average the aligned subjects, '
        "move the average back by the mean displacement so that it sits in the middle of the group, and "
        "repeat. The template gets sharper as the subjects line up.</p>",
        unsafe_allow_html=True,
    )
    subjects = _choose_subjects()
    if not subjects:
        st.info("Choose the subjects above.")
        return
    st.caption(
        f"{len(subjects)} subjects ({subjects[0].image.ndim}D, grid {subjects[0].image.shape}); "
        f"{sum(s.labels is not None for s in subjects)} with labels."
    )
    approach = st.radio(
        "Approach",
        [CLASSICAL, LEARNED],
        horizontal=True,
        key="atlas_approach",
        help="Learned: a template tensor optimised jointly with a small registration network.",
    )
    if approach == LEARNED:
        _learned_section(subjects)
        return
    spec, overrides, iterations, init = _choose_method(subjects[0].image.ndim)
    if st.button("Build template", type="primary", key="atlas_run", icon=":material/play_arrow:"):
        try:
            spec.make_config(overrides)
        except (TypeError, ValueError) as e:
            st.error(f"Invalid parameters: {e}")
        else:
            _build(subjects, spec, overrides, iterations, init)
    result = st.session_state.get(RESULT_KEY)
    if result is None:
        return
    st.subheader(
        f"Templates T0 .. T{len(result.templates) - 1} ({result.method}, {len(result.subjects)} subjects)"
    )
    for w in result.warnings:
        st.warning(w)
    _image_panels(result)
    _charts(result)
    _downloads(result)


state.run_page(body, "atlas")
