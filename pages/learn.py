"""Learn: concept labs that teach registration by interaction (computation in regcore.labs)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from pages import _state as state
from regcore import viz
from regcore.labs import diffeo, fiducials, landscape, phantoms, tradeoff, transforms
from regcore.spatial.jacobian import jacobian_determinant

SIZE = 96
VISITED_KEY = "lab_r_visited"
"""Session key of the regularisation lab's record: the lambdas this session has looked at."""


@st.cache_data(show_spinner=False)
def _phantom(contrast: str = "T1-like", shift: float = 0.0, squeeze: float = 0.0) -> np.ndarray:
    return phantoms.phantom_image(phantoms.phantom_labels(SIZE, shift, squeeze), contrast)


@st.cache_data(show_spinner="Computing the similarity landscape ...")
def _landscape(kind: str, moving_contrast: str, level: int = 0):
    f, m = _phantom("T1-like"), _phantom(moving_contrast)
    values = landscape.LAB_SHIFTS if kind == "translation" else landscape.LAB_ANGLES
    return landscape.landscape(f, m, kind=kind, values=values, level=level)


@st.cache_data(show_spinner="Registering once with every weight (shared by all sessions) ...")
def _tradeoff_points() -> dict[float, tradeoff.TradeoffPoint]:
    """Every lambda of :data:`tradeoff.WEIGHTS`, optimised together once per server."""
    return {p.weight: p for p in tradeoff.sweep(tradeoff.WEIGHTS)}


@st.cache_data(show_spinner=False)
def _diffeo(amplitude: float, steps: int) -> dict:
    return diffeo.compare((SIZE, SIZE), amplitude=amplitude, steps=steps, smoothness=4.0)


def _det_j(u: np.ndarray) -> np.ndarray:
    """det J of a lab's ``(2, H, W)`` voxel displacement (``regcore.spatial.jacobian``), for the picture."""
    return jacobian_determinant(torch.as_tensor(np.asarray(u), dtype=torch.float64)[None])[0].numpy()


def _detj_limit(*jacobians: np.ndarray) -> float:
    """One det J colour range (log2 units) for panels compared side by side: the app's automatic
    range (:func:`regcore.viz.detj_scale`) of all their voxels together."""
    return viz.detj_scale(np.concatenate([np.ravel(j) for j in jacobians])).limit


def _same_window(figures: list, *images: np.ndarray) -> None:
    """Give the grey image under each figure (its first trace) one window: 0.5-99.5 % of all ``images``."""
    level, width = viz.auto_window(np.concatenate([np.ravel(a) for a in images]))
    for fig in figures:
        fig.data[0].update(zmin=level - width / 2, zmax=level + width / 2)


def _explain(text: str) -> None:
    st.markdown(f'<div class="rl-explain">{text}</div>', unsafe_allow_html=True)


def lab_transformations() -> None:
    c1, c2 = st.columns([1, 2])
    with c1:
        kind = st.radio(
            "Transformation", ["rigid", "affine", "deformable"], horizontal=True, key="lab_t_kind"
        )
        angle = st.slider("Rotation (deg)", -45.0, 45.0, 10.0, key="lab_t_angle")
        tx = st.slider("Shift along x (voxels)", -20.0, 20.0, 0.0, key="lab_t_tx")
        ty = st.slider("Shift along y (voxels)", -20.0, 20.0, 0.0, key="lab_t_ty")
        if kind == "rigid":
            u = transforms.rigid_displacement((SIZE, SIZE), angle, tx, ty)
        elif kind == "affine":
            sx = st.slider("Scale x", 0.5, 1.5, 1.1, key="lab_t_sx")
            sy = st.slider("Scale y", 0.5, 1.5, 0.9, key="lab_t_sy")
            shear = st.slider("Shear", -0.5, 0.5, 0.15, key="lab_t_shear")
            u = transforms.affine_displacement((SIZE, SIZE), angle, sx, sy, shear, tx, ty)
        else:
            amp = st.slider("Amplitude (voxels)", 0.0, 10.0, 4.0, key="lab_t_amp")
            waves = st.slider("Waves across the image", 0.5, 4.0, 1.5, key="lab_t_waves")
            u = transforms.deformable_displacement((SIZE, SIZE), amp, waves) + transforms.rigid_displacement(
                (SIZE, SIZE), angle, tx, ty
            )
        _explain(
            {
                "rigid": "A <b>rigid</b> map only rotates and shifts: distances and angles stay the same "
                "(3 numbers in 2D, 6 in 3D). Enough for the same patient's head on two days.",
                "affine": "An <b>affine</b> map adds scaling and shear: straight lines stay straight and "
                "parallel lines stay parallel (6 numbers in 2D, 12 in 3D). Corrects size differences.",
                "deformable": "A <b>deformable</b> map moves every point on its own: a displacement vector per "
                "voxel. Needed between subjects or for breathing, but must be kept smooth.",
            }[kind]
        )
    with c2:
        img = _phantom()
        warped = transforms.warp_image(img, u)
        a, b = st.columns(2)
        a.plotly_chart(
            viz.grid_overlay_figure(warped, u, step=6, title="Grid carried by the map", height=380),
            width="stretch",
            key="lab_t_grid",
        )
        b.plotly_chart(
            viz.jacobian_figure(_det_j(u), title="Volume change (det J)", height=380),
            width="stretch",
            key="lab_t_jac",
        )


def lab_similarity() -> None:
    c1, c2 = st.columns([1, 2])
    with c1:
        kind = st.radio("Move the image by", ["translation", "rotation"], horizontal=True, key="lab_s_kind")
        contrast = st.radio(
            "Moving image",
            ["T1-like", "T2-like"],
            horizontal=True,
            key="lab_s_contrast",
            help="T2-like has different grey values per tissue: a multimodal pair.",
        )
        _explain(
            "Each curve is the cost an optimiser sees as the image is moved away from the true alignment "
            "(0). <b>MSE</b> assumes identical grey values, so on a multimodal pair its minimum is in the "
            "wrong place or flat. <b>NCC</b> allows a linear grey-value change. <b>Mutual information</b> "
            "only asks that one image's grey values predict the other's, so it works across contrasts."
        )
    with c2:
        values, costs = _landscape(kind, contrast)
        unit = "voxels" if kind == "translation" else "degrees"
        st.plotly_chart(
            viz.line_figure(
                values,
                costs,
                title="Cost vs misalignment (normalised, lower is better)",
                x_title=f"{kind} ({unit})",
                y_title="normalised cost",
                height=380,
            ),
            width="stretch",
            key="lab_s_plot",
        )
        fixed, moving = _phantom("T1-like"), _phantom(contrast)
        figures = [
            viz.image_figure(fixed, title="Fixed (T1-like)", height=260),
            viz.image_figure(moving, title=f"Moving ({contrast})", height=260),
        ]
        _same_window(figures, fixed, moving)
        for col, fig, key in zip(st.columns(2), figures, ("lab_s_f", "lab_s_m")):
            col.plotly_chart(fig, width="stretch", key=key)


def lab_regularisation() -> None:
    points = _tradeoff_points()
    c1, c2 = st.columns([1, 2])
    with c1:
        w = st.select_slider("Smoothness weight (lambda)", tradeoff.WEIGHTS, value=1.0, key="lab_r_w")
        p = points[float(w)]
        visited = st.session_state.setdefault(VISITED_KEY, set())
        visited.add(float(w))
        st.metric("Mean Dice", f"{p.dice:.3f}")
        st.metric("Folded voxels", f"{p.folding_percent:.2f} %")
        st.metric("Roughness (mean |grad u|^2)", f"{p.roughness:.3f}")
        _explain(
            "Similarity alone will happily tear and fold the grid to match noise. A regulariser adds a "
            "price for rough deformations. Too little: folds (impossible anatomy). Too much: the map "
            "cannot move enough and Dice drops. Good settings sit in between."
        )
    with c2:
        a, b = st.columns(2)
        a.plotly_chart(
            viz.grid_overlay_figure(
                p.warped, p.displacement, step=3, title=f"Grid, lambda = {w}", height=380
            ),
            width="stretch",
            key="lab_r_grid",
        )
        jacobians = {x: _det_j(q.displacement) for x, q in points.items()}
        b.plotly_chart(
            viz.jacobian_figure(
                jacobians[float(w)],
                title=f"det J, lambda = {w}",
                height=380,
                limit=_detj_limit(*jacobians.values()),
            ),
            width="stretch",
            key="lab_r_jac",
        )
        seen = [points[x] for x in sorted(visited)]
        st.plotly_chart(
            viz.line_figure(
                [f"{q.weight:g}" for q in seen],
                {
                    "Dice": [q.dice for q in seen],
                    "folding % / 100": [q.folding_percent / 100 for q in seen],
                },
                title="Trade-off at every lambda you have tried",
                x_title="smoothness weight lambda",
                y_title="Dice, folded fraction",
                height=260,
                markers=True,
            ),
            width="stretch",
            key="lab_r_curve",
        )


def lab_diffeomorphisms() -> None:
    c1, c2 = st.columns([1, 2])
    with c1:
        amp = st.slider("Velocity strength (voxels)", 1.0, 16.0, 10.0, key="lab_d_amp")
        steps = st.slider("Scaling-and-squaring steps", 0, 10, 7, key="lab_d_steps")
        r = _diffeo(float(amp), int(steps))
        st.metric("Folding, u = v", f"{r['direct']['folding_percent']:.2f} %")
        st.metric("Folding, u = exp(v)", f"{r['exp']['folding_percent']:.2f} %")
        _explain(
            "Adding a large displacement in one step can cross neighbouring points over each other: the "
            "grid folds (det J <= 0). A diffeomorphic method treats the field as a <b>velocity</b> and "
            "follows it in many tiny steps; scaling and squaring does this with a few compositions "
            "(2^steps tiny steps). The result stays invertible. With 0 steps both are the same."
        )
    with c2:
        img = _phantom()
        panels = {"direct": "u = v (one step)", "exp": "u = exp(v)"}
        warped = {key: transforms.warp_image(img, r[key]["displacement"]) for key in panels}
        grids = {
            key: viz.grid_overlay_figure(
                warped[key], r[key]["displacement"], step=4, title=f"Grid, {t}", height=340
            )
            for key, t in panels.items()
        }
        _same_window(list(grids.values()), *warped.values())
        limit = _detj_limit(*(r[key]["jacobian"] for key in panels))
        for col, (key, title) in zip(st.columns(2), panels.items()):
            col.plotly_chart(grids[key], width="stretch", key=f"lab_d_grid_{key}")
            col.plotly_chart(
                viz.jacobian_figure(r[key]["jacobian"], title=f"det J, {title}", height=300, limit=limit),
                width="stretch",
                key=f"lab_d_jac_{key}",
            )


def lab_multiresolution() -> None:
    c1, c2 = st.columns([1, 2])
    with c1:
        level = st.select_slider(
            "Resolution level", [0, 1, 2, 3], value=2, key="lab_m_level", format_func=lambda v: f"1/{2**v}"
        )
        metric = st.radio("Metric", list(landscape.METRICS), horizontal=True, key="lab_m_metric")
        _explain(
            "Coarse levels blur away small detail, so the cost curve has one wide valley: the optimiser "
            "finds the right basin from far away. Finer levels then sharpen the answer. This is why most "
            "methods run a pyramid (e.g. 4, 2, 1) and spend most iterations at the coarse levels."
        )
    with c2:
        series = {}
        for lv in range(level + 1):
            values, costs = _landscape("translation", "T1-like", lv)
            series[f"level 1/{2**lv}"] = costs[metric]
        st.plotly_chart(
            viz.line_figure(
                values,
                series,
                title=f"{metric} cost vs shift at each level",
                x_title="shift (full-resolution voxels)",
                y_title="normalised cost",
                height=360,
            ),
            width="stretch",
            key="lab_m_plot",
        )
        dips = ", ".join(f"{name}: {landscape.count_local_minima(c)}" for name, c in series.items())
        st.caption(f"Local minima of each {metric} curve ({dips}).")
        st.plotly_chart(
            viz.image_figure(
                landscape.downsample(_phantom(), level), title=f"Image at 1/{2**level}", height=260
            ),
            width="stretch",
            key="lab_m_img",
        )


def lab_landmarks() -> None:
    c1, c2 = st.columns([1, 2])
    with c1:
        n = st.slider("Number of fiducials", 3, 12, 4, key="lab_l_n")
        spread = st.slider("Spread of fiducials (mm)", 5.0, 60.0, 20.0, key="lab_l_spread")
        fle = st.slider("FLE: localisation error (mm RMS)", 0.0, 5.0, 1.0, 0.1, key="lab_l_fle")
        _explain(
            "<b>FLE</b>: how precisely each fiducial is clicked. <b>FRE</b>: how well the fitted transform "
            "matches the fiducials; it is small even when the registration is poor elsewhere. <b>TRE</b>: "
            "the error at the target you care about. TRE grows with distance from the fiducials' centre "
            "and shrinks with more, more widely spread fiducials: do not trust a low FRE."
        )
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    fid = np.stack([spread * np.cos(angles), spread * np.sin(angles)], 1)
    targets = np.stack([np.linspace(0, 80, 9), np.zeros(9)], 1)
    r = fiducials.simulate(fid, targets, fle, trials=400)
    with c2:
        st.plotly_chart(
            viz.line_figure(
                targets[:, 0],
                {
                    "TRE (simulated)": r["tre_rms"],
                    "TRE (Fitzpatrick prediction)": r["tre_predicted"],
                    "FRE": np.full(len(targets), r["fre_rms"]),
                },
                title="Error at a target vs its distance from the fiducials' centre",
                x_title="target distance (mm)",
                y_title="RMS error (mm)",
                height=360,
                markers=True,
            ),
            width="stretch",
            key="lab_l_plot",
        )
        fig = go.Figure(
            [
                go.Scatter(
                    x=fid[:, 0],
                    y=fid[:, 1],
                    mode="markers",
                    name="fiducials",
                    marker={"size": 11, "color": "#2f6fed"},
                ),
                go.Scatter(
                    x=targets[:, 0],
                    y=targets[:, 1],
                    mode="markers",
                    name="targets",
                    marker={"size": 9, "symbol": "x", "color": "#ff2d55"},
                ),
            ]
        )
        fig.update_layout(height=260, template="plotly_white", margin={"l": 10, "r": 10, "t": 10, "b": 10})
        fig.update_xaxes(title="x (mm)")
        fig.update_yaxes(title="y (mm)", scaleanchor="x")
        st.plotly_chart(fig, width="stretch", key="lab_l_layout")


LABS = {
    "Transformations": lab_transformations,
    "Similarity landscapes": lab_similarity,
    "Regularisation trade-off": lab_regularisation,
    "Diffeomorphisms and folding": lab_diffeomorphisms,
    "Multi-resolution": lab_multiresolution,
    "FLE / FRE / TRE": lab_landmarks,
}


def body() -> None:
    st.title("Learn")
    st.markdown(
        '<p class="rl-lead">Small interactive labs: move a slider, watch the picture, read two lines.</p>',
        unsafe_allow_html=True,
    )
    lab = st.segmented_control("Concept", list(LABS), default="Transformations", key="learn_lab")
    with st.container(border=True):
        LABS[lab or "Transformations"]()


state.run_page(body, "learn")
