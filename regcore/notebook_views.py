"""3D views for Jupyter notebooks: an interactive NiiVue widget when a notebook front-end shows it,
plotly tri-planar slices (:func:`regcore.viz.triplanar_figure`) everywhere else.

    >>> from regcore import notebook_views as views
    >>> views.volume_view(pair.fixed, labels=pair.fixed_labels, points=pair.fixed_landmarks)
    >>> views.pair_view(pair.fixed, result.warped)                 # warped over fixed
    >>> views.displacement_view(pair.fixed, result.displacement)   # |u| in mm over the image

Each call returns a :class:`View` that displays itself as the last expression of a cell. Which
viewer it uses (``View.viewer``) and why (``View.reason``):

* ``"niivue"``: `ipyniivue <https://github.com/niivue/ipyniivue>`_ (an anywidget; installed by the
  ``notebooks`` extra) in a Jupyter kernel with a front-end (JupyterLab 4, Notebook 7, VS Code);
* ``"plotly"``: three orthogonal slices with the same overlays, when no widget front-end runs
  (``nbmake``/``nbconvert`` execution, pytest, CI, a plain Python process) or no widget library is
  installed. Every notebook therefore runs anywhere.

Why not itkwidgets: version 0.32 (the last release on PyPI) ships no JupyterLab 4 extension and pins
ipywidgets 7; in JupyterLab 4.6 its view fails with "Module itkwidgets, semver range ^0.32.6 is not
registered as a widget module" (checked in headless chromium), and installing it downgrades the
widget stack the other widgets need. NiiVue renders the same content (volume, labels, points, 3D).

The environment variable ``REGLAB_VIEWER`` (``auto``, ``niivue``, ``plotly``)
overrides the argument, e.g. to force the widget in a headless run or the fallback in a browser.

Volumes go to the widget as NIfTI written by :func:`regcore.io.save_image` (RAS affine from the
Image's LPS geometry), so the widget shows world (mm) coordinates and the right orientation;
landmarks (LPS mm) become small octahedra of a mesh in the same world frame.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regcore import viz
from regcore.image import Image, Landmarks
from regcore.notebook_viewer import (
    FRONTEND_MARKERS,
    HEADLESS_MARKERS,
    VIEWER_ENV,
    Viewer,
    choose_viewer,
    frontend_available,
)

__all__ = [
    "Viewer",
    "View",
    "VIEWER_ENV",
    "HEADLESS_MARKERS",
    "FRONTEND_MARKERS",
    "frontend_available",
    "choose_viewer",
    "volume_view",
    "pair_view",
    "displacement_view",
    "label_lut",
    "points_mesh_obj",
    "metrics_table",
    "TABLE_KEYS",
]

NIIVUE_OPTIONS = ("colormap", "opacity", "cal_min", "cal_max")


@dataclass
class View:
    """A 3D view: ``obj`` is the NiiVue widget or the plotly Figure."""

    viewer: Viewer
    obj: Any
    reason: str = ""
    layers: list[str] = field(default_factory=list)

    @property
    def is_widget(self) -> bool:
        return self.viewer != Viewer.PLOTLY

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.obj)

    def __repr__(self) -> str:
        return f"View(viewer={self.viewer.value!r}, layers={self.layers}, reason={self.reason!r})"


# -- inputs --------------------------------------------------------------------------------------------
def _image(x, name: str, *, labels: bool = False, like: Image | None = None) -> Image:
    """An Image on ``like``'s grid from an Image, tensor or array ``(*S)``/``(1, *S)``."""
    if isinstance(x, Image):
        if like is not None and x.shape != like.shape:
            raise ValueError(f"{name} shape {x.shape} must match the image's shape {like.shape}")
        return x
    a = viz.as_array(x)
    if like is None:
        raise TypeError(f"{name} must be a regcore Image (it carries the geometry), got {type(x).__name__}")
    a = a.reshape(like.shape) if a.size == int(np.prod(like.shape)) else a
    if a.shape != tuple(like.shape):
        raise ValueError(f"{name} shape {a.shape} must match the image's shape {like.shape}")
    dtype = np.int32 if labels else np.float32
    return Image.from_array(a.astype(dtype), geometry=like.geometry, is_labels=labels, name=name)


def _points_mm(points, image: Image) -> np.ndarray | None:
    if points is None:
        return None
    if isinstance(points, Landmarks):
        return np.asarray(points.points, float)
    pts = np.asarray(points, float)
    if pts.ndim != 2 or pts.shape[1] != image.ndim:
        raise ValueError(
            f"points must be Landmarks or an (N, {image.ndim}) array of LPS mm, got shape {pts.shape}"
        )
    return pts


# -- NiiVue ----------------------------------------------------------------------------------------------
def label_lut(values, label_names: Mapping[int, str] | None = None) -> dict:
    """NiiVue label colour table (``R, G, B, A, I, labels``) for label ``values``: each value in its
    :func:`viz.label_color` (the colour it has in every RegLab figure)."""
    values = sorted({int(v) for v in values if int(v) != 0})
    cols = [viz.colors.hex_rgb(viz.label_color(v)) for v in values]
    return {
        "R": [0] + [c[0] for c in cols],
        "G": [0] + [c[1] for c in cols],
        "B": [0] + [c[2] for c in cols],
        "A": [0] + [255] * len(values),
        "I": [0] + values,
        "labels": [""] + [(label_names or {}).get(v, f"label {v}") for v in values],
    }


def points_mesh_obj(points_lps_mm: np.ndarray, radius_mm: float = 2.0) -> str:
    """Wavefront OBJ text: one octahedron of ``radius_mm`` per 3D point, in RAS mm (what NiiVue draws in)."""
    pts = np.asarray(points_lps_mm, float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be (N, 3) LPS mm, got shape {pts.shape}")
    ras = pts * np.array([-1.0, -1.0, 1.0])
    corners = (
        np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float) * radius_mm
    )
    faces = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
    lines = []
    for k, p in enumerate(ras):
        lines += [f"v {x:.3f} {y:.3f} {z:.3f}" for x, y, z in p + corners]
        lines += [f"f {a + 1 + 6 * k} {b + 1 + 6 * k} {c + 1 + 6 * k}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


def _nifti_bytes(image: Image, name: str) -> tuple[bytes, str]:
    from regcore.io import save_image

    with tempfile.TemporaryDirectory(prefix="reglab_view_") as tmp:
        path = save_image(image, Path(tmp) / f"{name}.nii.gz")
        return Path(path).read_bytes(), Path(path).name


def _niivue(layers: list[tuple[str, Image, dict]], points_mm, height: int, label_names):
    from ipyniivue import NiiVue, ShowRender, SliceType

    nv = NiiVue(
        height=height,
        slice_type=SliceType.MULTIPLANAR,
        multiplanar_show_render=ShowRender.ALWAYS,
        is_radiological_convention=True,
        back_color=(0, 0, 0, 1),
        show_3d_crosshair=True,
        mesh_thickness_on_2d=3.0,
        crosshair_color=(0.2, 0.8, 1.0, 0.8),
        is_orient_cube=True,
    )
    volumes = []
    for name, image, opts in layers:
        data, fname = _nifti_bytes(image, name)
        volumes.append(
            {"data": data, "name": fname, **{k: v for k, v in opts.items() if k in NIIVUE_OPTIONS}}
        )
    nv.load_volumes(volumes)
    for vol, (_, image, opts) in zip(nv.volumes, layers):
        if opts.get("lut"):
            vol.set_colormap_label(label_lut(image.present_labels(), label_names))
    if points_mm is not None and len(points_mm):
        nv.load_meshes(
            [
                {
                    "data": points_mesh_obj(points_mm).encode(),
                    "name": "landmarks.obj",
                    "rgba255": [255, 214, 10, 255],
                }
            ]
        )
    return nv


def _build(
    layers: list[tuple[str, Image, dict]],
    *,
    points,
    viewer,
    height: int,
    title: str,
    label_names,
    overlay_name: str,
) -> View:
    base = layers[0][1]
    if base.ndim != 3:
        raise ValueError(f"3D views need a 3D image, got {base.ndim}D; use regcore.viz panels for 2D")
    choice, reason = choose_viewer(viewer)
    pts = _points_mm(points, base)
    names = [n for n, _, _ in layers] + (["landmarks"] if pts is not None and len(pts) else [])
    if choice == Viewer.NIIVUE:
        return View(choice, _niivue(layers, pts, height, label_names), reason, names)
    labels = next((im for _, im, o in layers if o.get("lut")), None)
    overlay = next(((n, im, o) for n, im, o in layers[1:] if not o.get("lut")), None)
    fig = viz.triplanar_figure(
        base,
        labels=labels,
        label_names=label_names,
        points=base.geometry.world_to_index_points(pts) if pts is not None else None,
        overlay=overlay[1] if overlay else None,
        overlay_name=overlay_name or (overlay[0] if overlay else ""),
        overlay_colorscale=overlay[2].get("plotly_colorscale", "Hot") if overlay else "Hot",
        overlay_threshold=overlay[2].get("cal_min", 0.0) if overlay else 0.0,
        title=title,
        height=max(240, height // 2 + 60),
    )
    return View(choice, fig, reason, names)


# -- public views -----------------------------------------------------------------------------------------
def volume_view(
    image: Image,
    *,
    labels=None,
    points=None,
    label_names: Mapping[int, str] | None = None,
    label_opacity: float = 0.35,
    viewer: str | Viewer = Viewer.AUTO,
    height: int = 480,
    title: str = "",
) -> View:
    """A 3D image with an optional label overlay (names on hover) and landmarks (Landmarks or (N, 3) LPS mm)."""
    if not isinstance(image, Image):
        raise TypeError(f"image must be a regcore Image, got {type(image).__name__}")
    layers: list[tuple[str, Image, dict[str, Any]]] = [(image.name or "image", image, {"colormap": "gray"})]
    if labels is not None:
        lab = _image(labels, "labels", labels=True, like=image)
        layers.append(("labels", lab, {"opacity": label_opacity, "lut": True}))
        label_names = label_names or lab.label_names
    return _build(
        layers,
        points=points,
        viewer=viewer,
        height=height,
        title=title,
        label_names=label_names,
        overlay_name="",
    )


def pair_view(
    fixed: Image,
    warped,
    *,
    labels=None,
    opacity: float = 0.5,
    viewer: str | Viewer = Viewer.AUTO,
    height: int = 480,
    title: str = "warped (colour) over fixed (grey)",
) -> View:
    """The warped (or moving) image in colour over the fixed image: where they disagree, edges double."""
    if not isinstance(fixed, Image):
        raise TypeError(f"fixed must be a regcore Image, got {type(fixed).__name__}")
    w = _image(warped, "warped", like=fixed)
    layers: list[tuple[str, Image, dict[str, Any]]] = [
        ("fixed", fixed, {"colormap": "gray"}),
        (
            "warped",
            w,
            {
                "colormap": "warm",
                "opacity": opacity,
                "plotly_colorscale": "Inferno",
                "cal_min": float(np.percentile(w.numpy(), 60)),
            },
        ),
    ]
    if labels is not None:
        layers.append(
            ("labels", _image(labels, "labels", labels=True, like=fixed), {"opacity": 0.3, "lut": True})
        )
    return _build(
        layers,
        points=None,
        viewer=viewer,
        height=height,
        title=title,
        label_names=None,
        overlay_name="warped",
    )


def displacement_view(
    image: Image,
    displacement,
    *,
    points=None,
    threshold_mm: float = 0.5,
    viewer: str | Viewer = Viewer.AUTO,
    height: int = 480,
    title: str = "|u| (mm) over the fixed image",
) -> View:
    """Displacement magnitude in mm (``displacement`` ``(1, 3, *S)`` voxels, fixed -> moving) over the image;
    magnitudes below ``threshold_mm`` are transparent."""
    if not isinstance(image, Image):
        raise TypeError(f"image must be a regcore Image, got {type(image).__name__}")
    mag = viz.magnitude(displacement, image.spacing)
    mag_image = _image(mag.astype(np.float32), "displacement_mm", like=image)
    layers = [
        ("image", image, {"colormap": "gray"}),
        (
            "displacement_mm",
            mag_image,
            {
                "colormap": "hot",
                "opacity": 0.7,
                "cal_min": float(threshold_mm),
                "cal_max": float(mag.max()) or 1.0,
                "plotly_colorscale": "Hot",
            },
        ),
    ]
    return _build(
        layers,
        points=points,
        viewer=viewer,
        height=height,
        title=title,
        label_names=None,
        overlay_name="|u| mm",
    )


# -- tables --------------------------------------------------------------------------------------------------
TABLE_KEYS = ("dice_mean", "hd95_mean_mm", "tre_mean_mm", "folding_percent", "sdlogj", "runtime_s")
"""Columns of :func:`metrics_table` by default (keys of :func:`regcore.metrics.evaluate`)."""


def metrics_table(runs: Mapping[str, Mapping[str, Any]], keys: tuple[str, ...] = TABLE_KEYS):
    """A pandas DataFrame with one row per run (``name -> evaluate() dict``) and ``keys`` as columns
    (a key a run lacks is NaN), e.g. ``metrics_table({"before": before, "fireants": metrics})``."""
    import pandas as pd

    if not runs:
        raise ValueError("runs must contain at least one name -> metrics dict")
    rows = {
        name: {k: (m.get(k) if m.get(k) is not None else np.nan) for k in keys} for name, m in runs.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(keys))
