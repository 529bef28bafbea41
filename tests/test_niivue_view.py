"""NiiVue 3D viewer (pages/_niivue_view.py): NIfTI bytes for the browser, the Evaluate view's registry
entry (3D runs only), the 2D message, and the Data page's "NiiVue 3D" viewer choice."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("niivue_component")
nib = pytest.importorskip("nibabel")
from streamlit.testing.v1 import AppTest  # noqa: E402

from pages import _niivue_view as nv  # noqa: E402
from regcore.data import Pair  # noqa: E402
from regcore.image import Geometry, Image  # noqa: E402
from regcore.io import save_image  # noqa: E402
from regcore.methods.base import RegistrationResult  # noqa: E402
from regcore.run_record import RunRecord  # noqa: E402
from regcore.viz import label_color  # noqa: E402
from regcore.viz.colors import hex_rgb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def oblique_geometry(shape=(12, 14, 10)) -> Geometry:
    """LPS grid with anisotropic spacing, a rotation about z and an offset origin."""
    c, s = np.cos(0.3), np.sin(0.3)
    m = np.eye(4)
    m[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.0, 1.5, 2.5])
    m[:3, 3] = [10.0, -20.0, 5.0]
    return Geometry.from_matrix(shape, m)


def image_3d() -> Image:
    rng = np.random.default_rng(0)
    return Image.from_array(rng.random((12, 14, 10)).astype(np.float64), oblique_geometry(), name="img")


def labels_3d() -> Image:
    lab = np.zeros((12, 14, 10), np.int64)
    lab[2:6, 3:8, 1:5], lab[7:11, 2:9, 4:9] = 3, 25
    return Image.from_array(lab, oblique_geometry(), is_labels=True, name="lab")


def decode(data: bytes):
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def test_image_bytes_round_trip_float32_with_save_image_affine(tmp_path):
    img = image_3d()
    nii = decode(nv.encode_image(img))
    assert nii.shape == img.shape and nii.get_data_dtype() == np.float32
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.geometry.index_to_world  # LPS -> RAS
    np.testing.assert_allclose(nii.affine, ras, atol=1e-5)
    np.testing.assert_allclose(
        nii.affine, nib.load(str(save_image(img, tmp_path / "ref.nii.gz"))).affine, atol=1e-5
    )
    assert int(nii.header["qform_code"]) == 1 and int(nii.header["sform_code"]) == 1
    np.testing.assert_allclose(np.asarray(nii.dataobj), img.numpy(), rtol=1e-6)


def test_overlay_bytes_carry_a_window_that_hides_faint_voxels():
    img = image_3d()
    assert float(decode(nv.encode_image(img)).header["cal_max"]) == 0.0, "background: NiiVue picks its window"
    header = decode(nv.encode_image(img, overlay=True)).header
    lo, hi = float(header["cal_min"]), float(header["cal_max"])
    arr = img.numpy()
    assert arr.min() < lo < hi <= arr.max()
    assert lo == pytest.approx(arr.min() + nv.OVERLAY_FLOOR * (hi - arr.min()), rel=1e-5)


def test_label_bytes_are_rgba_in_regcore_colours_with_transparent_background():
    lab = labels_3d()
    nii = decode(nv.encode_image(lab))
    assert nii.shape == lab.shape and int(nii.header["datatype"]) == 2304  # NIfTI RGBA32
    rgba = np.asarray(nii.dataobj)
    for value in (3, 25):
        voxel = rgba[tuple(np.argwhere(lab.numpy() == value)[0])]
        assert tuple(voxel) == (*hex_rgb(label_color(value)), 255)
    assert tuple(rgba[0, 0, 0]) == (0, 0, 0, 0)


def test_two_dimensional_image_is_a_clear_error():
    img2 = Image.from_array(np.zeros((8, 9), np.float32), name="slice")
    with pytest.raises(ValueError, match=r"'slice' is 2D .*3D images only"):
        nv.encode_image(img2)


def test_fingerprint_changes_with_voxels_and_geometry():
    img = image_3d()
    other = img.with_data(img.data + 1.0)
    moved = Image(img.data, Geometry.identity(img.shape), name="img")
    prints = {nv.fingerprint(i) for i in (img, other, moved)}
    assert len(prints) == 3 and nv.fingerprint(img) == nv.fingerprint(image_3d())


def record(ndim: int) -> RunRecord:
    img = image_3d() if ndim == 3 else Image.from_array(np.zeros((8, 9), np.float32))
    u = torch.zeros(1, ndim, *img.shape)
    return RunRecord(Pair(f"{ndim}d", img, img), RegistrationResult("x", img, img, img, u), {})


def test_3d_viewer_is_offered_for_3d_runs_only():
    from pages._views import VIEWS

    entry = next(v for v in VIEWS if v.title == "3D viewer")
    assert entry.when is not None and entry.when(record(3)) and not entry.when(record(2))


def _viewer_script():
    import numpy as np
    import streamlit as st

    from pages._niivue_view import niivue_view
    from regcore.image import Image

    mode = st.session_state.get("mode", "3d")
    img = Image.from_array(np.random.default_rng(0).random((8, 9, 6) if mode == "3d" else (8, 9)))
    lab = Image.from_array((img.numpy() > 0.5).astype(np.int64), is_labels=True) if mode == "3d" else None
    niivue_view(img, labels=lab, second=img, label_names={1: "bright"}, key="t")


def test_viewer_draws_3d_and_explains_2d():
    at = AppTest.from_function(_viewer_script, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="t_label_opacity").value == 0.5 and at.slider(key="t_second_opacity").value == 0.0
    (component,) = at.get("component_instance")  # AppTest knows custom components only as their args
    args = json.loads(component.proto.json_args)
    assert args["view_mode"] == "multiplanar" and args["settings"]["crosshair"] and args["nifti_data"]
    assert [o["name"] for o in args["overlays"]] == ["labels.nii.gz"], "second image hidden at opacity 0"
    at.slider(key="t_second_opacity").set_value(0.4).run()
    args = json.loads(at.get("component_instance")[0].proto.json_args)
    assert [(o["name"], o["opacity"]) for o in args["overlays"]] == [
        ("second.nii.gz", 0.4),
        ("labels.nii.gz", 0.5),
    ]
    assert "bright" in at.get("html")[0].proto.body, "our label legend next to the viewer"
    at.session_state["mode"] = "2d"
    at.run()
    assert not at.exception and "needs a 3D image" in at.info[0].value


@pytest.mark.slow
def test_data_page_offers_niivue_for_a_3d_pair():
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        from pages import _nav as nav

        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
        at.switch_page(nav.page("data").path).run()
        assert at.session_state["pair"].fixed.ndim == 2
        assert "data_viewer" not in [w.key for w in at.segmented_control], "no NiiVue choice for 2D"
        at.session_state["pair"] = Pair("synthetic 3d", image_3d(), image_3d(), labels_3d(), labels_3d())
        at.run()
        viewer = at.segmented_control(key="data_viewer")
        assert viewer.value == "Slices", "the slice viewer stays the default"
        viewer.set_value("NiiVue 3D").run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.slider(key="nv_fixed_label_opacity") and at.slider(key="nv_moving_label_opacity")
    finally:
        os.chdir(old)


@pytest.mark.browser
def test_niivue_canvas_draws_in_headless_chromium(browser):
    """Data page, 3D sample, "NiiVue 3D": the WebGL2 canvas (SwiftShader under --disable-gpu) shows the
    volume: the viewer's iframe screenshot has many bright, coloured (label) pixels."""
    from app_server import stop_app_server
    from browser_kit import ARTIFACTS, SLOW_MS, load_3d_sample, no_traceback, settle, start_server
    from PIL import Image as PILImage

    proc, url = start_server("streamlit_niivue.log")
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.set_default_timeout(SLOW_MS)
        load_3d_sample(page, url)
        page.get_by_text("NiiVue 3D", exact=True).click()
        settle(page)
        frame = page.locator('iframe[title*="niivue"]').first
        frame.scroll_into_view_if_needed()
        page.wait_for_timeout(10_000)  # software WebGL: loading and the first render take seconds
        no_traceback(page)
        shot = ARTIFACTS / "niivue_data_3d.png"
        frame.screenshot(path=str(shot))
    finally:
        page.close()
        stop_app_server(proc)
    rgb = np.asarray(PILImage.open(shot).convert("RGB")).astype(int)
    bright = rgb.max(axis=2) > 80
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 60  # label colours, crosshair
    assert bright.mean() > 0.1 and coloured.mean() > 0.05, f"blank canvas? see {shot}"
