"""Visual comparison panels for one run: checkerboard, blend/flicker, difference, grid, arrows,
Jacobian, contours, landmarks with TRE arrows. Used by the Home and Evaluate pages."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from pages import _widgets as widgets
from regcore import viz


def _labels_on_fixed_grid(labels, fixed_geometry):
    if labels is None:
        return None
    if labels.geometry.same_grid(fixed_geometry):
        return labels
    from regcore.preprocess import resample_to
    return resample_to(labels, fixed_geometry)


def warped_labels(run: dict):
    """Moving labels on the fixed grid, warped by the run's displacement (cached in the run dict)."""
    if "_warped_labels" in run:
        return run["_warped_labels"]
    result, pair = run["result"], run["pair"]
    out = None
    extra = getattr(result, "extras", {}).get("warped_labels") if hasattr(result, "extras") else None
    if extra is not None:
        out = extra.numpy() if hasattr(extra, "numpy") else np.asarray(extra)
    elif getattr(pair, "moving_labels", None) is not None:
        from regcore.spatial.warp import warp_labels
        ml = _labels_on_fixed_grid(pair.moving_labels, result.fixed.geometry)
        out = warp_labels(ml.data[None].long(), result.displacement.float().cpu())[0, 0].numpy()
    run["_warped_labels"] = out
    return out


def map_points(disp: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """phi(x) = x + u(x) at ``(N, ndim)`` fixed voxel indices (linear interpolation of u ``(ndim, *S)``)."""
    from scipy.ndimage import map_coordinates
    idx = np.asarray(idx, dtype=float)
    if len(idx) == 0:
        return idx
    u = np.stack([map_coordinates(disp[c], idx.T, order=1, mode="nearest") for c in range(disp.shape[0])], 1)
    return idx + u


def landmark_views(run: dict):
    """Fixed-grid voxel coords: true moving landmarks, phi(fixed landmarks), ids, and TRE (mm) per id."""
    result, pair = run["result"], run["pair"]
    fl, ml = getattr(pair, "fixed_landmarks", None), getattr(pair, "moving_landmarks", None)
    if fl is None or ml is None:
        return None
    pf, pm, ids = fl.matched(ml)
    geom = result.fixed.geometry
    xf, xm = geom.world_to_index_points(pf), geom.world_to_index_points(pm)
    disp = result.displacement[0].detach().cpu().numpy()
    mapped = map_points(disp, xf)
    sp = np.asarray(geom.spacing)
    tre_before = np.linalg.norm((xf - xm) * sp, axis=1)
    tre_after = np.linalg.norm((mapped - xm) * sp, axis=1)
    return {"true": xm, "mapped": mapped, "fixed": xf, "ids": ids, "tre_before": tre_before, "tre_after": tre_after}


def _in_plane(points: np.ndarray, ndim: int, axis, index, tol: float = 2.0):
    if ndim == 2:
        return points, np.ones(len(points), bool)
    keep = np.abs(points[:, axis] - index) <= tol
    return points[:, [a for a in range(3) if a != axis]], keep


def slices_of(run: dict, axis, index) -> dict:
    """2D arrays of one slice: fixed, moving (on fixed grid), warped, in-plane displacement, det J."""
    result = run["result"]
    take = (lambda a: a) if axis is None else (lambda a: viz.extract_slice(a, axis, index))
    disp = result.displacement[0].detach().cpu().numpy()
    if "_jac" not in run:
        run["_jac"] = viz.jacobian_determinant_2d3d(disp)
    fl = getattr(run["pair"], "fixed_labels", None)
    fl = _labels_on_fixed_grid(fl, result.fixed.geometry) if fl is not None else None
    wl = warped_labels(run)
    ml = getattr(run["pair"], "moving_labels", None)
    ml = _labels_on_fixed_grid(ml, result.fixed.geometry) if ml is not None else None
    return {
        "fixed": take(result.fixed.numpy()), "moving": take(result.moving.numpy()),
        "warped": take(result.warped.numpy()),
        "disp": disp if axis is None else viz.slice_field(disp, axis, index),
        "jac": take(run["_jac"]),
        "fixed_labels": take(fl.numpy()) if fl is not None else None,
        "moving_labels": take(ml.numpy()) if ml is not None else None,
        "warped_labels": take(wl) if wl is not None else None,
    }


def flicker_figure(a: np.ndarray, b: np.ndarray, names=("fixed", "warped"), flips=(False, False),
                   height: int = 380) -> go.Figure:
    """Two-frame animation alternating a and b (press Flicker)."""
    fa, fb = viz.normalise01(a), viz.normalise01(b)
    fig = viz.image_figure(fa, zmin=0, zmax=1, flips=flips, height=height, title=names[0])
    frames = [go.Frame(data=[go.Heatmap(z=(fa if k % 2 == 0 else fb).T)], name=str(k),
                       layout=go.Layout(title_text=names[k % 2])) for k in range(12)]
    fig.frames = frames
    fig.update_layout(updatemenus=[{"type": "buttons", "showactive": False, "x": 0.02, "y": 0.02, "xanchor": "left",
                                        "buttons": [{"label": "Flicker", "method": "animate",
                                                      "args": [None, {"frame": {"duration": 450, "redraw": True},
                                                                       "transition": {"duration": 0}}]}]}])
    return fig


VIEWS = ["Checkerboard", "Blend", "Flicker / side by side", "Difference", "Deformation grid", "Arrows",
         "Jacobian", "Contours", "Landmarks"]


def render_visual_tabs(run: dict, key: str, height: int = 420) -> dict:
    """Picture views of one run (one at a time, chosen with a segmented control); returns the slice arrays."""
    result = run["result"]
    shape = result.fixed.shape
    axis, index = widgets.slice_picker(shape, key)
    s = slices_of(run, axis, index)
    axes = widgets.slice_axes(len(shape), axis)
    flips = viz.display_flips(result.fixed.geometry.orientation_codes(), axes)
    view = st.segmented_control("View", VIEWS, default=VIEWS[0], key=f"{key}_view") or VIEWS[0]
    if view == VIEWS[0]:
        tile = st.slider("Tile size (voxels)", 2, max(4, min(s["fixed"].shape) // 2), 16, key=f"{key}_tile")
        c1, c2 = st.columns(2)
        c1.plotly_chart(viz.checkerboard_figure(s["fixed"], s["moving"], tile, title="Before: fixed | moving",
                                                flips=flips, height=height), width="stretch", key=f"{key}_cb0")
        c2.plotly_chart(viz.checkerboard_figure(s["fixed"], s["warped"], tile, title="After: fixed | warped",
                                                flips=flips, height=height), width="stretch", key=f"{key}_cb1")
    elif view == VIEWS[1]:
        alpha = st.slider("Blend: fixed -> warped", 0.0, 1.0, 0.5, 0.05, key=f"{key}_alpha")
        st.plotly_chart(viz.blend_figure(s["fixed"], s["warped"], alpha, flips=flips, height=height),
                        width="stretch", key=f"{key}_blend")
    elif view == VIEWS[2]:
        c1, c2, c3 = st.columns(3)
        c1.plotly_chart(viz.image_figure(s["fixed"], title="Fixed", flips=flips, height=height - 60),
                        width="stretch", key=f"{key}_sbs0")
        c2.plotly_chart(viz.image_figure(s["warped"], title="Warped moving", flips=flips, height=height - 60),
                        width="stretch", key=f"{key}_sbs1")
        c3.plotly_chart(flicker_figure(s["fixed"], s["warped"], flips=flips, height=height - 60),
                        width="stretch", key=f"{key}_flicker")
    elif view == VIEWS[3]:
        c1, c2 = st.columns(2)
        c1.plotly_chart(viz.difference_figure(s["fixed"], s["moving"], title="Before: moving - fixed", flips=flips,
                                              height=height), width="stretch", key=f"{key}_diff0")
        c2.plotly_chart(viz.difference_figure(s["fixed"], s["warped"], title="After: warped - fixed", flips=flips,
                                              height=height), width="stretch", key=f"{key}_diff1")
    elif view == VIEWS[4]:
        step = st.slider("Grid spacing (voxels)", 2, 24, 6, key=f"{key}_gstep")
        st.plotly_chart(viz.grid_overlay_figure(s["warped"], s["disp"], step=step, flips=flips, height=height),
                        width="stretch", key=f"{key}_grid")
    elif view == VIEWS[5]:
        c1, c2 = st.columns(2)
        step = c1.slider("Arrow spacing (voxels)", 2, 24, 8, key=f"{key}_qstep")
        scale = c2.slider("Arrow scale", 0.5, 5.0, 1.0, 0.5, key=f"{key}_qscale")
        st.plotly_chart(viz.quiver_figure(s["fixed"], s["disp"], step=step, scale=scale, flips=flips,
                                          height=height), width="stretch", key=f"{key}_quiver")
    elif view == VIEWS[6]:
        jac = s["jac"]
        folded = float((run["_jac"] <= 0).mean() * 100)
        st.caption(f"det J < 1 shrinks, > 1 grows; <= 0 means folding (outlined). Folded voxels in the whole "
                   f"volume: {folded:.3f} %.")
        st.plotly_chart(viz.jacobian_figure(jac, flips=flips, height=height), width="stretch", key=f"{key}_jac")
    elif view == VIEWS[7]:
        if s["fixed_labels"] is None:
            st.info("This pair has no label maps; load labels on the Data page to see contours and Dice.")
        else:
            c1, c2 = st.columns(2)
            for col, other, title, k in ((c1, s["moving_labels"], "Before: fixed (cyan) vs moving (orange)", 0),
                                         (c2, s["warped_labels"], "After: fixed (cyan) vs warped (orange)", 1)):
                fig = viz.image_figure(s["fixed"], title=title, flips=flips, height=height)
                viz.add_contours(fig, s["fixed_labels"], color="#00e5ff")
                if other is not None:
                    viz.add_contours(fig, other, color="#ff9f1c", dash="dot")
                col.plotly_chart(fig, width="stretch", key=f"{key}_cont{k}")
    elif view == VIEWS[8]:
        lv = landmark_views(run)
        if lv is None:
            st.info("This pair has no matched landmarks; load fixed and moving landmark CSVs on the Data page.")
        else:
            true2, keep = _in_plane(lv["true"], len(shape), axis, index)
            map2, _ = _in_plane(lv["mapped"], len(shape), axis, index)
            fix2, _ = _in_plane(lv["fixed"], len(shape), axis, index)
            ids = [i for i, k in zip(lv["ids"], keep) if k]
            c1, c2 = st.columns(2)
            c1.plotly_chart(viz.landmark_tre_figure(s["moving"], true2[keep] if len(shape) == 3 else true2,
                                                    fix2[keep] if len(shape) == 3 else fix2, ids=ids,
                                                    title="Before: true (yellow) vs identity (red)",
                                                    flips=flips, height=height), width="stretch", key=f"{key}_lm0")
            c2.plotly_chart(viz.landmark_tre_figure(s["moving"], true2[keep] if len(shape) == 3 else true2,
                                                    map2[keep] if len(shape) == 3 else map2, ids=ids,
                                                    title="After: true (yellow) vs phi(fixed) (red)",
                                                    flips=flips, height=height), width="stretch", key=f"{key}_lm1")
            st.caption(f"Mean TRE {lv['tre_before'].mean():.2f} mm before -> {lv['tre_after'].mean():.2f} mm after "
                       f"({len(lv['ids'])} landmarks, arrows = residual error).")
    return s


def identity_result(result):
    """A copy of a result with zero displacement (the 'before registration' state)."""
    from dataclasses import replace
    return replace(result, method="identity", warped=result.moving,
                   displacement=torch.zeros_like(result.displacement), affine=None, velocity=None,
                   loss_history=[], runtime_s=0.0, peak_memory_mb=0.0, extras={})
