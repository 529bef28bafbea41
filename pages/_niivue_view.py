"""NiiVue 3D viewer (``niivue-streamlit``): multiplanar slices with a linked crosshair, L/R/A/P/S/I
orientation letters and a 3D render tile, of a 3D regcore Image with optional overlays.

Volumes go to the browser as gzipped NIfTI (RAS affine, as :func:`regcore.io.save_image` writes it):
intensities as float32, label maps as RGBA32 voxels in regcore's label colours
(:func:`regcore.viz.label_color`; background transparent), so the overlay matches our legend and
every other panel. Encoded bytes are cached (``st.cache_data``) by a cheap fingerprint of the image.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping

import numpy as np
import streamlit as st

from regcore import viz
from regcore.image import Image
from regcore.io.images import RAS_TO_LPS
from regcore.viz.colors import PALETTE, hex_rgb

RGBA = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
"""NIfTI RGBA32 voxel (datatype 2304), the label overlay's storage type."""
SECOND_COLORMAP = "red"
"""NiiVue colourmap of the second image overlaid on the background (e.g. warped on fixed)."""
OVERLAY_FLOOR = 0.1
"""Fraction of the overlay's intensity range below which its voxels are transparent."""


def nifti_affine(image: Image) -> np.ndarray:
    """4x4 voxel -> RAS mm affine of a 3D image (regcore's LPS ``index_to_world`` with x, y negated)."""
    return RAS_TO_LPS @ image.geometry.index_to_world


def _check_3d(image: Image, what: str) -> None:
    if not isinstance(image, Image):
        raise TypeError(f"{what} must be a regcore Image, got {type(image).__name__}")
    if image.ndim != 3:
        raise ValueError(
            f"{what} {image.name!r} is {image.ndim}D (shape {image.shape}); the NiiVue viewer shows 3D images only"
        )


def _nifti_gz(arr: np.ndarray, affine: np.ndarray, window: tuple[float, float] | None = None) -> bytes:
    import nibabel as nib

    nii = nib.Nifti1Image(arr, affine)
    if window is not None:  # NiiVue trusts cal_min/cal_max; an overlay is transparent below cal_min
        nii.header["cal_min"], nii.header["cal_max"] = window
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    return gzip.compress(nii.to_bytes(), compresslevel=1)


def label_rgba(labels: np.ndarray) -> np.ndarray:
    """``(*S)`` integer label map -> ``(*S)`` RGBA32 array: each value > 0 in :func:`regcore.viz.label_color`,
    background (0) fully transparent."""
    lab = np.asarray(labels).astype(np.int64)
    table = np.array([(*hex_rgb(c), 255) for c in PALETTE], dtype=np.uint8)  # (20, 4)
    rgba = np.where((lab > 0)[..., None], table[(lab - 1) % len(PALETTE)], 0).astype(np.uint8)
    return rgba.view(RGBA)[..., 0]


def overlay_window(arr: np.ndarray, floor: float = OVERLAY_FLOOR) -> tuple[float, float]:
    """``(cal_min, cal_max)`` of an intensity overlay: cal_max = 99.5th percentile, cal_min = ``floor`` of
    the way up from the minimum, so near-background voxels (noise, resampling fringe) stay transparent."""
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(np.percentile(finite, 99.5))
    if hi <= lo:
        hi = float(finite.max()) if finite.max() > lo else lo + 1.0
    return lo + floor * (hi - lo), hi


def encode_image(image: Image, *, overlay: bool = False) -> bytes:
    """Gzipped NIfTI-1 bytes of a 3D Image (first channel): float32 intensities, or RGBA32 label colours
    when ``image.is_labels``; affine = :func:`nifti_affine`. ``overlay``: intensities get the header window
    :func:`overlay_window`. Raises ValueError for a non-3D image."""
    _check_3d(image, "image")
    arr = image.data[0].detach().cpu().numpy()
    if image.is_labels:
        return _nifti_gz(label_rgba(arr), nifti_affine(image))
    data = arr.astype(np.float32, copy=False)
    return _nifti_gz(data, nifti_affine(image), overlay_window(data) if overlay else None)


def fingerprint(image: Image) -> str:
    """Cheap identity of an image for the cache: shape, geometry, dtype and a strided sample of voxels."""
    flat = image.data.detach().reshape(-1)
    step = max(1, flat.numel() // 65536)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, image.is_labels, str(image.data.dtype))).encode("utf-8"))
    h.update(np.ascontiguousarray(image.geometry.index_to_world, dtype=np.float64).tobytes())
    h.update(flat[::step].cpu().numpy().tobytes())
    h.update(repr(float(flat.float().sum())).encode("utf-8"))
    return h.hexdigest()


@st.cache_data(max_entries=12, show_spinner=False)
def _cached_encoding(_image: Image, print_: str, overlay: bool) -> bytes:
    return encode_image(_image, overlay=overlay)


def cached_encoding(image: Image, *, overlay: bool = False) -> bytes:
    """:func:`encode_image`, computed once per image content (a rerun reuses the bytes)."""
    _check_3d(image, "image")
    return _cached_encoding(image, fingerprint(image), overlay)


def label_legend(labels: Image | None, names: Mapping[int, str] | None) -> None:
    """Our label legend (swatch, value, name) next to the viewer: the overlay uses these colours."""
    if labels is None:
        return
    legend = viz.label_legend_html(labels.present_labels(), names)
    if legend:
        st.html(legend)


def niivue_view(
    background: Image,
    *,
    labels: Image | None = None,
    second: Image | None = None,
    second_title: str = "second image",
    label_names: Mapping[int, str] | None = None,
    key: str,
    height: int = 560,
) -> None:
    """NiiVue viewer of a 3D ``background`` with an optional ``second`` image (``red`` colourmap, faint voxels transparent,
    opacity slider) and ``labels`` (regcore colours, opacity slider, our legend beside the viewer).

    A 2D image gets a one-line message instead (NiiVue adds nothing to the slice views there).
    """
    if background is None or background.ndim != 3:
        dims = "no" if background is None else f"a {background.ndim}D"
        st.info(f"The NiiVue 3D viewer needs a 3D image; this is {dims} image. Use the slice views.")
        return
    from niivue_component import niivue_viewer

    view_col, side = st.columns([3, 2])
    overlays = []
    if second is not None:
        opacity = side.slider(f"{second_title} opacity", 0.0, 1.0, 0.0, 0.05, key=f"{key}_second_opacity")
        if opacity > 0:
            overlays.append(
                {
                    "data": cached_encoding(second, overlay=True),
                    "name": "second.nii.gz",
                    "colormap": SECOND_COLORMAP,
                    "opacity": opacity,
                }
            )
    if labels is not None:
        lab_opacity = side.slider("Label opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}_label_opacity")
        if lab_opacity > 0:
            overlays.append(
                {
                    "data": cached_encoding(labels),
                    "name": "labels.nii.gz",
                    "colormap": "gray",
                    "opacity": lab_opacity,
                }
            )
    side.caption(
        "Click or drag in a plane to move the linked crosshair; drag the 3D render to turn it; scroll to "
        "change the slice. Letters give the patient directions (radiological: patient right on the left)."
    )
    with side:
        label_legend(labels, label_names)
    with view_col:
        niivue_viewer(
            nifti_data=cached_encoding(background),
            filename="background.nii.gz",
            overlays=overlays or None,
            height=height,
            view_mode="multiplanar",
            styled=True,
            settings={"crosshair": True, "radiological": True, "colorbar": False, "interpolation": False},
            update_interval_ms=None,
            key=f"{key}_niivue",
        )
