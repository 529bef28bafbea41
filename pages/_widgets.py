"""Reusable Streamlit widgets: tri-planar viewer, header facts, config-driven parameter forms."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from regcore import viz

PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


def header_facts(images: dict[str, Any]) -> pd.DataFrame:
    """The header facts behind most registration bugs, one row per image."""
    rows = []
    for name, img in images.items():
        if img is None:
            continue
        g = img.geometry
        arr = img.numpy()
        rows.append(
            {
                "image": name,
                "shape": " x ".join(map(str, g.shape)),
                "spacing (mm)": " x ".join(f"{s:.3g}" for s in g.spacing),
                "origin (mm, LPS)": ", ".join(f"{o:.1f}" for o in g.origin),
                "orientation": g.orientation_codes(),
                "intensity range": f"{float(arr.min()):.4g} .. {float(arr.max()):.4g}",
                "kind": "labels" if img.is_labels else str(img.data.dtype).replace("torch.", ""),
            }
        )
    return pd.DataFrame(rows)


def landmarks_in_slice(landmarks, geometry, axis: int | None, index: int | None, tol: float = 1.5):
    """Landmarks (LPS mm) -> ``(M, 2)`` in-plane voxel coordinates of the slice and their ids."""
    if landmarks is None or len(landmarks) == 0:
        return np.zeros((0, 2)), []
    idx = geometry.world_to_index_points(landmarks.points)
    if geometry.ndim == 2:
        return idx, list(landmarks.ids)
    keep = np.abs(idx[:, axis] - index) <= tol
    axes = [a for a in range(3) if a != axis]
    return idx[keep][:, axes], [i for i, k in zip(landmarks.ids, keep) if k]


def slice_axes(ndim: int, axis: int | None) -> tuple[int, int]:
    """Tensor axes shown horizontally/vertically (``regcore.viz.slice_axes``)."""
    return viz.slice_axes(ndim, axis)


def window_controls(arr: np.ndarray, key: str) -> tuple[float, float]:
    """Level/width sliders initialised from robust percentiles."""
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi <= lo:
        hi = lo + 1.0
    level0, width0 = viz.auto_window(arr)
    c1, c2 = st.columns(2)
    level = c1.slider("Level", lo, hi, float(np.clip(level0, lo, hi)), key=f"{key}_level", format="%.3g")
    width = c2.slider(
        "Width",
        (hi - lo) / 100,
        (hi - lo) * 2,
        float(np.clip(width0, (hi - lo) / 100, (hi - lo) * 2)),
        key=f"{key}_width",
        format="%.3g",
    )
    return level, width


@st.fragment
def triplanar_viewer(
    image, *, labels=None, label_names=None, landmarks=None, key: str = "viewer", height: int = 330
) -> None:
    """Slices of a 2D/3D Image with window/level, optional label overlay and landmarks.

    Runs as a fragment: moving a slider re-renders only this viewer.
    """
    arr = image.numpy()
    lab = labels.numpy() if labels is not None else None
    level, width = window_controls(arr, key)
    show_labels = False
    if lab is not None:
        show_labels = st.toggle("Label overlay", value=True, key=f"{key}_labels")
        if show_labels:  # legend: each label value in the colour it has on every panel
            st.html(viz.label_legend_html(label_names or np.unique(lab), label_names))
    flips_codes = image.geometry.orientation_codes()
    if image.ndim == 2:
        pts, ids = landmarks_in_slice(landmarks, image.geometry, None, None)
        fig = viz.slice_figure(
            arr,
            labels=lab if show_labels else None,
            label_names=label_names,
            points=pts,
            point_ids=ids,
            level=level,
            width=width,
            flips=viz.display_flips(flips_codes),
            height=height + 120,
        )
        st.plotly_chart(fig, width="stretch", key=f"{key}_fig2d", config={"displaylogo": False})
        return
    cols = st.columns(3)
    for axis, col in zip((2, 1, 0), cols):
        with col:
            plane_panel(
                image, lab if show_labels else None, label_names, landmarks, axis, level, width, key, height
            )


@st.fragment
def plane_panel(
    image, labels_array, label_names, landmarks, axis: int, level: float, width: float, key: str, height: int
) -> None:
    """One plane of the tri-planar viewer; its own fragment, so a slice slider redraws only this plane."""
    arr = image.numpy()
    n = arr.shape[axis]
    index = st.slider(PLANES[axis], 0, n - 1, n // 2, key=f"{key}_slice{axis}")
    axes = slice_axes(3, axis)
    pts, ids = landmarks_in_slice(landmarks, image.geometry, axis, index)
    fig = viz.slice_figure(
        viz.extract_slice(arr, axis, index),
        labels=viz.extract_slice(labels_array, axis, index) if labels_array is not None else None,
        label_names=label_names,
        points=pts,
        point_ids=ids,
        level=level,
        width=width,
        flips=viz.display_flips(image.geometry.orientation_codes(), axes),
        height=height,
    )
    st.plotly_chart(fig, width="stretch", key=f"{key}_fig{axis}", config={"displaylogo": False})


def slice_picker(shape: tuple[int, ...], key: str) -> tuple[int | None, int | None]:
    """For 3D pairs: choose plane and slice; 2D -> (None, None)."""
    if len(shape) == 2:
        return None, None
    c1, c2 = st.columns([1, 3])
    axis = {v: k for k, v in PLANES.items()}[
        c1.selectbox("Plane", list(PLANES.values())[::-1], key=f"{key}_plane")
    ]
    index = c2.slider("Slice", 0, shape[axis] - 1, shape[axis] // 2, key=f"{key}_index")
    return axis, index


def _enum_value(v):
    return v.value if isinstance(v, enum.Enum) else v


def param_widgets(
    params: list,
    preset: dict[str, Any] | None,
    key: str,
    resolved: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Widgets built from ``regcore.config.describe`` ParamSpecs; returns overrides that differ from defaults.

    Advanced parameters sit in an expander. ``preset`` (e.g. from the Train page) sets initial values.
    ``resolved(values)`` (optional) maps the values chosen so far to the fields the method sets itself
    (fireants' preset "auto" sets its schedule): those boxes are greyed out, show the value that runs and are
    left out of the overrides. When auto is switched off a box starts from the value auto chose (or keeps what
    the user typed there before). A field whose empty default itself means auto (demons' iterations) stays
    editable.
    """
    preset = dict(preset or {})
    basic = [p for p in params if not p.advanced]
    advanced = [p for p in params if p.advanced]
    values: dict[str, Any] = {}

    def widget(p) -> None:
        chosen = resolved(values) if resolved is not None else {}
        # a box not drawn in a run loses its widget state: the user's last value and auto's live on here
        typed, last_auto = f"{key}_{p.name}_typed", f"{key}_{p.name}_last_auto"
        if p.name in chosen and greyed_under_auto(p):
            st.session_state[last_auto] = chosen[p.name]
            _one_widget(p, chosen[p.name], key, disabled=True)
            return
        start = st.session_state.get(typed, st.session_state.get(last_auto, p.default))
        values[p.name] = _one_widget(p, preset.get(p.name, start), key)
        if resolved is not None:
            st.session_state[typed] = values[p.name]

    for p in basic:
        widget(p)
    if advanced:
        with st.expander("Advanced parameters"):
            for p in advanced:
                widget(p)
    return {
        k: v
        for k, v in values.items()
        if _enum_value(v) != _enum_value(next(p.default for p in params if p.name == k)) or k in preset
    }


PARAM_TITLES = {"lr": "Learning rate", "dims": "Dimensions", "fov": "Field of view"}
"""Parameter names whose title is not just their words."""
ACRONYMS = {
    "ncc",
    "lncc",
    "mi",
    "nmi",
    "mse",
    "mind",
    "ssc",
    "svf",
    "rk4",
    "ode",
    "gpu",
    "cpu",
    "id",
    "tv",
}
"""Words written in capitals; units such as "mm" keep their lower case."""


def param_title(name: str) -> str:
    """A config field's name as people read it: ``sigma_elastic`` -> "Sigma elastic", ``ncc_window`` ->
    "NCC window", ``lr`` -> "Learning rate"."""
    if name in PARAM_TITLES:
        return PARAM_TITLES[name]
    words = [w.upper() if w.lower() in ACRONYMS else w for w in name.split("_") if w]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _spans_decades(bounds, decades: float = 4.0) -> bool:
    """True when ``(lo, hi)`` spans more than ``decades`` powers of ten (a slider cannot resolve it)."""
    lo, hi = bounds
    return lo > 0 and hi / lo > 10**decades


def _decade_step(default) -> float:
    """Step of a float box spanning decades: a tenth of ``default``'s power of ten (1e-5 -> 1e-6), so its - and +
    buttons move a small value by a tenth of its scale instead of Streamlit's 0.01 (which disables -)."""
    return 10.0 ** (math.floor(math.log10(abs(float(default)))) - 1) if default else 0.01


def greyed_under_auto(p) -> bool:
    """Whether ``param_widgets`` greys out ParamSpec ``p`` when auto sets it: yes unless its default is empty,
    i.e. its own empty box is the auto switch (demons' iterations)."""
    empty = p.default is None or (isinstance(p.default, (tuple, list, str)) and len(p.default) == 0)
    return not empty


def _one_widget(p, value, key: str, disabled: bool = False):
    """One widget for ParamSpec ``p`` starting at ``value``; ``disabled`` greys it out under its own key per
    value, so the key of the editable box keeps what the user typed."""
    label = param_title(p.name)
    common = {
        "help": p.help if not disabled else f"{p.help} Greyed out: auto sets it on this pair.",
        "key": f"{key}_{p.name}" if not disabled else f"{key}_{p.name}_auto_{value}",
        "disabled": disabled,
    }
    if p.choices:
        options = list(p.choices)
        labels = [str(_enum_value(o)) for o in options]
        cur = str(_enum_value(value))
        i = labels.index(cur) if cur in labels else 0
        chosen = st.selectbox(label, labels, index=i, **common)
        return options[labels.index(chosen)]
    if p.type == "bool" or isinstance(p.default, bool):
        return st.toggle(label, value=bool(value), **common)
    if p.type in ("int", "float") and p.range is not None and _spans_decades(p.range):
        lo, hi = p.range  # a slider over 1e3..1e9 cannot pick a value: type it, bounds checked
        cast = int if p.type == "int" else float
        v = cast(np.clip(value, lo, hi))
        return cast(
            st.number_input(
                label,
                cast(lo),
                cast(hi),
                v,
                **common,
                **({"format": "%d"} if cast is int else {"format": "%.4g", "step": _decade_step(p.default)}),
            )
        )
    if p.type in ("int", "float") and p.range is not None:
        lo, hi = p.range
        if p.type == "int":
            step = int(p.step or 1)
            return int(st.slider(label, int(lo), int(hi), int(np.clip(value, lo, hi)), step=step, **common))
        step = float(p.step or (hi - lo) / 100)
        return float(
            st.slider(
                label,
                float(lo),
                float(hi),
                float(np.clip(value, lo, hi)),
                step=step,
                **common,
                format="%.4g",
            )
        )
    if p.type == "int":
        return int(st.number_input(label, value=int(value), step=1, **common))
    if p.type == "float":
        return float(st.number_input(label, value=float(value), **common, format="%.4g"))
    if p.type == "tuple":
        shown = ", ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        text = st.text_input(label, value=shown, **common, placeholder="auto")
        return text  # regcore.config.from_overrides parses "4, 2, 1"
    return st.text_input(label, value="" if value is None else str(value), **common)


def parse_numbers(text: str, default, field: str) -> list:
    """``"16, 32, 32"`` -> numbers typed like ``default``'s items (all ints -> ints, else floats); a ValueError
    names ``field`` and the bad item."""
    cast = int if all(isinstance(v, int) and not isinstance(v, bool) for v in default) else float
    out = []
    for item in text.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(","):
        if item.strip():
            try:
                out.append(cast(item.strip()))
            except ValueError:
                kind = "whole numbers" if cast is int else "numbers"
                raise ValueError(
                    f"{field}: {item.strip()!r} is not a number; give {kind} separated by commas"
                ) from None
    return out


def before_after_metrics(record, key_help: str = "") -> None:
    """One row of ``st.metric``: mean Dice, mean TRE, folded voxels and runtime of ``record`` (a RunRecord),
    each with its change from "before registration" (TRE and folding: down is good)."""
    after, before = record.metrics, record.before_metrics

    def shown(key: str, unit: str = "") -> tuple[str, str | None]:
        a, b = after.get(key), before.get(key)
        if a is None:
            return "n/a", None
        delta = None if b is None else f"{viz.format_number(a - b)}{unit}"
        return f"{viz.format_number(a)}{unit}", delta

    cols = st.columns(4)
    v, d = shown("dice_mean")
    cols[0].metric(
        "Mean Dice", v, d, help="Label overlap after registration (1 = perfect); change vs. before."
    )
    v, d = shown("tre_mean_mm", " mm")
    cols[1].metric(
        "Mean TRE", v, d, delta_color="inverse", help="Landmark error after registration; change vs. before."
    )
    fold = after.get("folding_percent")
    cols[2].metric(
        "Folded voxels",
        "n/a" if fold is None else f"{viz.format_number(fold)} %",
        help="det J <= 0; 0 is ideal.",
    )
    runtime = after.get("runtime_s", record.result.runtime_s)
    cols[3].metric("Runtime", f"{viz.format_number(runtime)} s", help=key_help or None)


def blank_image_warnings(pair) -> None:
    """A warning per image of ``pair`` whose voxels all hold one value (nothing to register); the check runs
    once per (fixed, moving) image objects, not on every rerun."""
    kept = st.session_state.get("_blank_image_warnings")
    if kept is None or kept[0] is not pair.fixed or kept[1] is not pair.moving:
        from regcore.metrics.evaluate import constant_image_warnings

        kept = (pair.fixed, pair.moving, constant_image_warnings(pair.fixed, pair.moving))
        st.session_state["_blank_image_warnings"] = kept
    for message in kept[2]:
        st.warning(message + ".", icon=":material/hide_image:")
