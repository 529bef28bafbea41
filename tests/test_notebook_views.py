"""regcore.notebook_views (3D views: NiiVue widget or plotly fallback) and the regcore.viz builders the
notebooks use (panel grids, tri-planar slices, overlays, registration panels)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from regcore import notebook_views as views
from regcore import viz
from regcore.image import Geometry, Image, Landmarks


@pytest.fixture()
def volume() -> Image:
    """A small RAS-oriented 3D image (like the sample brain) with a two-label map and three landmarks."""
    geometry = Geometry(
        (12, 14, 10),
        (2.0, 2.0, 2.0),
        (10.0, 12.0, -8.0),
        ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    )
    data = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32)
    return Image.from_array(data, geometry=geometry, name="vol")


@pytest.fixture()
def labels(volume) -> Image:
    lab = np.zeros(volume.shape, np.int32)
    lab[2:6, 3:8, 2:6] = 3
    lab[6:10, 5:12, 4:9] = 7
    return Image.from_array(
        lab, geometry=volume.geometry, is_labels=True, label_names={3: "left", 7: "right"}
    )


@pytest.fixture()
def points(volume) -> Landmarks:
    idx = np.array([[3.0, 4.0, 3.0], [8.0, 9.0, 5.0], [6.0, 7.0, 5.0]])
    return Landmarks(volume.geometry.index_to_world_points(idx), ["a", "b", "c"])


# -- choosing the viewer ---------------------------------------------------------------------------------
@pytest.fixture()
def jupyter_kernel(monkeypatch):
    """Pretend to run inside a Jupyter kernel (an IPython ZMQInteractiveShell), without front-end markers."""
    import IPython

    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    for name in (*views.HEADLESS_MARKERS, *views.FRONTEND_MARKERS, views.VIEWER_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_headless_kernels_fall_back_to_plotly(jupyter_kernel):
    jupyter_kernel.delenv("PYTEST_CURRENT_TEST", raising=False)  # pytest sets it again for each phase
    assert views.frontend_available()[0] is False  # nbclient/nbconvert: no marker at all
    jupyter_kernel.setenv("JPY_SESSION_NAME", "ch01.ipynb")  # a Jupyter server started the kernel...
    assert views.frontend_available() == (True, "Jupyter front-end (JPY_SESSION_NAME is set)")
    jupyter_kernel.setenv("PYTEST_CURRENT_TEST", "x")  # ...but nbmake runs it: headless wins
    viewer, reason = views.choose_viewer("auto")
    assert viewer == views.Viewer.PLOTLY and "PYTEST_CURRENT_TEST" in reason


def test_plain_python_has_no_frontend(monkeypatch):
    monkeypatch.delenv(views.VIEWER_ENV, raising=False)
    ok, reason = views.frontend_available()
    assert not ok and reason


def test_environment_variable_overrides_and_is_validated(monkeypatch):
    monkeypatch.setenv(views.VIEWER_ENV, "plotly")
    assert views.choose_viewer("niivue")[0] == views.Viewer.PLOTLY
    monkeypatch.setenv(views.VIEWER_ENV, "vtk")
    with pytest.raises(ValueError, match=r"\$REGLAB_VIEWER must be one of"):
        views.choose_viewer()
    monkeypatch.delenv(views.VIEWER_ENV)
    with pytest.raises(ValueError, match="viewer must be one of"):
        views.choose_viewer("itk")


def test_auto_picks_niivue_when_a_frontend_runs(monkeypatch):
    pytest.importorskip("ipyniivue")
    monkeypatch.delenv(views.VIEWER_ENV, raising=False)
    from regcore import notebook_viewer

    monkeypatch.setattr(
        notebook_viewer, "frontend_available", lambda: (True, "Jupyter front-end (JPY_SESSION_NAME is set)")
    )
    viewer, reason = views.choose_viewer()
    assert viewer == views.Viewer.NIIVUE and "JPY_SESSION_NAME" in reason


# -- the two paths -------------------------------------------------------------------------------------------
def test_fallback_draws_three_planes_with_labels_and_points(monkeypatch, volume, labels, points):
    monkeypatch.delenv(views.VIEWER_ENV, raising=False)
    view = views.volume_view(volume, labels=labels, points=points, viewer="plotly", title="t")
    assert view.viewer == views.Viewer.PLOTLY and not view.is_widget
    assert isinstance(view.obj, go.Figure)
    titles = [a.text for a in view.obj.layout.annotations]
    assert [t.split(" ")[0] for t in titles] == ["sagittal", "coronal", "axial"]
    hover = [t for t in view.obj.data if getattr(t, "customdata", None) is not None]
    assert hover and {"left", "right"} & set(np.asarray(hover[0].customdata).ravel())
    assert any(getattr(t, "name", "") == "landmarks" for t in view.obj.data)
    assert view.layers == ["vol", "labels", "landmarks"]


def test_widget_path_creates_a_niivue_widget(monkeypatch, volume, labels, points):
    ipyniivue = pytest.importorskip("ipyniivue")
    monkeypatch.delenv(views.VIEWER_ENV, raising=False)
    view = views.volume_view(volume, labels=labels, points=points, viewer="niivue")
    assert view.viewer == views.Viewer.NIIVUE and view.is_widget
    assert isinstance(view.obj, ipyniivue.NiiVue)
    assert [v.name for v in view.obj.volumes] == ["vol.nii.gz", "labels.nii.gz"]
    assert view.obj.volumes[1].colormap_label is not None  # label colour table with names
    assert {"left", "right"} <= set(view.obj.volumes[1].colormap_label.labels)
    assert len(view.obj.meshes) == 1 and view.obj.meshes[0].name == "landmarks.obj"
    displacement = views.displacement_view(volume, torch.ones(1, 3, *volume.shape), viewer="niivue")
    assert [v.name for v in displacement.obj.volumes] == ["image.nii.gz", "displacement_mm.nii.gz"]
    pair = views.pair_view(volume, volume.numpy() * 0.5, viewer="niivue")
    assert len(pair.obj.volumes) == 2


def test_widget_volumes_carry_the_world_geometry(volume):
    nib = pytest.importorskip("nibabel")
    data, name = views._nifti_bytes(volume, "vol")
    img = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(data))
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.geometry.index_to_world
    np.testing.assert_allclose(img.affine, ras, atol=1e-5)
    assert name == "vol.nii.gz"


def test_displacement_and_pair_views_fall_back(volume):
    u = torch.zeros(1, 3, *volume.shape)
    u[0, 0] = 1.5  # 1.5 voxels = 3 mm everywhere
    view = views.displacement_view(volume, u, viewer="plotly")
    overlays = [
        t for t in view.obj.data if t.type == "heatmap" and t.colorscale and t.opacity and t.opacity < 1
    ]
    assert overlays and np.nanmax(np.asarray(overlays[0].z, float)) == pytest.approx(3.0)
    assert isinstance(views.pair_view(volume, volume.numpy() * 0.5, viewer="plotly").obj, go.Figure)


def test_views_reject_bad_input(volume):
    with pytest.raises(TypeError, match="image must be a regcore Image"):
        views.volume_view(volume.numpy())
    with pytest.raises(ValueError, match="labels shape"):
        views.volume_view(volume, labels=np.zeros((3, 3, 3)), viewer="plotly")
    flat = Image.from_array(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="3D views need a 3D image"):
        views.volume_view(flat, viewer="plotly")
    with pytest.raises(ValueError, match="points must be Landmarks"):
        views.volume_view(volume, points=np.zeros((4, 2)), viewer="plotly")


def test_points_mesh_and_label_lut():
    obj = views.points_mesh_obj(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), radius_mm=1.0)
    vertices = [list(map(float, line.split()[1:])) for line in obj.splitlines() if line.startswith("v ")]
    faces = [line for line in obj.splitlines() if line.startswith("f ")]
    assert len(vertices) == 12 and len(faces) == 16
    np.testing.assert_allclose(np.mean(vertices[:6], 0), [-1.0, -2.0, 3.0])  # LPS -> RAS
    lut = views.label_lut([0, 7, 3], {3: "a"})
    assert lut["I"] == [0, 3, 7] and lut["labels"] == ["", "a", "label 7"] and lut["A"][0] == 0


def test_metrics_table_rows_and_missing_keys():
    table = views.metrics_table(
        {"before": {"dice_mean": 0.5}, "after": {"dice_mean": 0.8, "tre_mean_mm": 1.0}},
        keys=("dice_mean", "tre_mean_mm"),
    )
    assert list(table.index) == ["before", "after"] and np.isnan(table.loc["before", "tre_mean_mm"])
    with pytest.raises(ValueError, match="at least one"):
        views.metrics_table({})


# -- regcore.viz additions ---------------------------------------------------------------------------------------
def test_magnitude_in_voxels_and_mm():
    u = np.zeros((1, 2, 4, 5))
    u[0, 0], u[0, 1] = 3.0, 4.0
    assert viz.magnitude(u).max() == pytest.approx(5.0)
    assert viz.magnitude(u, (2.0, 1.0)).max() == pytest.approx(np.hypot(6.0, 4.0))
    with pytest.raises(ValueError, match="spacing must have 2 entries"):
        viz.magnitude(u, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="disp must be"):
        viz.magnitude(np.zeros((4, 5)))


def test_panel_grid_keeps_ranges_flips_and_titles():
    a = viz.image_figure(np.zeros((6, 4)), title="one", flips=(True, False))
    b = viz.jacobian_figure(np.ones((6, 4)), title="two")
    grid = viz.panel_grid([a, b], height=200)
    assert [t.text for t in grid.layout.annotations] == ["one", "two"]
    assert tuple(grid.layout.xaxis.range) == (5.5, -0.5) and tuple(grid.layout.xaxis2.range) == (-0.5, 5.5)
    assert grid.layout.yaxis2.scaleanchor == "x2" and grid.layout.height == 200
    assert len(grid.data) == len(a.data) + len(b.data)
    with pytest.raises(ValueError, match="at least one"):
        viz.panel_grid([])


def test_triplanar_figure_cuts_through_the_centre(volume, labels):
    grid = viz.triplanar_figure(volume, labels=labels, center=(3, 4, 5))
    heatmaps = [t for t in grid.data if t.type == "heatmap" and t.customdata is None]
    np.testing.assert_allclose(np.asarray(heatmaps[0].z, float), volume.numpy()[3].T)
    assert [a.text for a in grid.layout.annotations] == ["sagittal (3)", "coronal (4)", "axial (5)"]
    with pytest.raises(ValueError, match="overlay shape"):
        viz.triplanar_figure(volume, overlay=np.zeros((2, 2, 2)))


def test_heat_overlay_hides_values_below_threshold():
    fig = viz.add_heat_overlay(
        viz.image_figure(np.zeros((3, 3))), np.array([[0, 1, 2]] * 3, float), threshold=0.5
    )
    z = np.asarray(fig.data[-1].z, float)
    assert np.isnan(z).sum() == 3 and np.nanmin(z) == 1.0


def test_registration_panels_from_a_result():
    from regcore.methods.base import RegistrationResult

    fixed = Image.from_array(np.random.default_rng(1).random((16, 12)).astype(np.float32))
    u = torch.zeros(1, 2, 16, 12)
    result = RegistrationResult("m", fixed, fixed, fixed, u)
    fig = viz.registration_panels(
        result, labels=np.ones((16, 12), int), show=("fixed", "after", "grid", "jacobian", "magnitude")
    )
    assert [a.text for a in fig.layout.annotations] == [
        "fixed",
        "warped - fixed",
        "deformation grid",
        "det J",
        "|u| (mm)",
    ]
    with pytest.raises(ValueError, match="show must name panels"):
        viz.registration_panels(result, show=("nope",))
