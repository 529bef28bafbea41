"""Atlas (template) building: the measures, the un-biasing shift, an analytic group whose unbiased
template lies at the centre, a short real run on the sample brains, `regcore atlas` and the page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_random_field
from scipy import ndimage

from regcore.atlas import AtlasSubject, build_template, majority_vote, mean_distance_mm, sharpness
from regcore.atlas.template import template_shift
from regcore.cli import main
from regcore.image import Geometry, Image
from regcore.io import save_image

ROOT = Path(__file__).resolve().parents[1]


def blobs(shift=(0.0, 0.0), shape=(40, 48)) -> np.ndarray:
    """Two Gaussian blobs of different size (no symmetry), moved by ``shift`` voxels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    a = np.exp(-((yy - 20 - shift[0]) ** 2 + (xx - 22 - shift[1]) ** 2) / (2 * 5.0**2))
    b = np.exp(-((yy - 14 - shift[0]) ** 2 + (xx - 32 - shift[1]) ** 2) / (2 * 3.0**2))
    return a + 0.6 * b


# -- measures ------------------------------------------------------------------------------------------
def test_sharpness_of_a_linear_ramp_is_its_slope_per_mm():
    ramp = np.add.outer(3.0 * np.arange(20), 4.0 * np.arange(30))  # 3 per voxel on axis 0, 4 on axis 1
    image = Image.from_array(ramp, spacing=(2.0, 0.5))
    assert sharpness(image) == pytest.approx(np.hypot(3.0 / 2.0, 4.0 / 0.5))
    flat = Image.from_array(np.full((8, 8), 5.0))
    assert sharpness(flat) == 0.0
    blurred = Image.from_array(ndimage.gaussian_filter(blobs(), 2.0))
    assert sharpness(blurred) < sharpness(Image.from_array(blobs()))


def test_mean_distance_is_the_displacement_length_in_mm():
    u = torch.zeros(1, 2, 6, 7)
    u[:, 0], u[:, 1] = 1.0, 2.0
    assert mean_distance_mm(u, (2.0, 3.0)) == pytest.approx(np.hypot(2.0, 6.0))
    mask = np.zeros((6, 7), bool)
    mask[0, 0] = True
    u[0, :, 0, 0] = 0.0
    assert mean_distance_mm(u, (2.0, 3.0), mask) == 0.0
    with pytest.raises(ValueError, match="spacing must have 2"):
        mean_distance_mm(u, (1.0,))


def test_majority_vote_picks_the_most_frequent_label_and_breaks_ties_low():
    a = np.array([[1, 2, 0], [3, 3, 5]])
    b = np.array([[1, 2, 4], [3, 1, 6]])
    c = np.array([[2, 2, 4], [1, 1, 7]])
    vote = majority_vote([a, b, c])
    assert vote.tolist() == [[1, 2, 4], [3, 1, 5]]
    with pytest.raises(ValueError, match=r"label_maps\[1\] has shape"):
        majority_vote([a, np.zeros((3, 3), int)])


# -- the un-biasing shift ------------------------------------------------------------------------------
def test_template_shift_of_a_constant_field_is_its_negative():
    u = torch.zeros(1, 2, 16, 18)
    u[:, 0], u[:, 1] = 1.5, -0.75
    assert torch.allclose(template_shift(u), -u, atol=1e-5)
    assert torch.allclose(template_shift(u, step=0.5), -0.5 * u, atol=1e-5)


def test_template_shift_inverts_the_mean_field_cross_checked_with_compose():
    from regcore.spatial.compose import compose

    u = smooth_random_field((32, 36), 2.0, seed=4, sigma=5)
    s = template_shift(u)
    residual = compose(u, s)  # (id + u) o (id + s) ~ id away from the border
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert residual[inner].abs().max() < 0.05 * u.abs().max()
    assert (s + u)[inner].abs().max() > 0.05 * u.abs().max(), "s is the inverse, not simply -u"
    with pytest.raises(ValueError, match="step must be in"):
        template_shift(u, step=0.0)


# -- building ------------------------------------------------------------------------------------------
def test_an_unbiased_template_of_two_shifted_subjects_lands_at_the_centre():
    """Subjects = one pattern moved by +t and -t. Even started from the +t subject (a biased first
    template), the template moves to the centre of the group: the pattern itself."""
    t = np.array([2.0, 1.5])
    subjects = [
        AtlasSubject(name, Image.from_array(blobs(sign * t)))
        for name, sign in (("plus", 1.0), ("minus", -1.0))
    ]
    result = build_template(
        subjects, "demons", 2, init="mean", initial_template=subjects[0].image, normalise=False
    )
    centre = np.array(ndimage.center_of_mass(blobs()))
    first = np.array(ndimage.center_of_mass(result.templates[0].numpy()))
    last = np.array(ndimage.center_of_mass(result.template.numpy()))
    assert np.allclose(first - centre, t, atol=0.05), "T0 is the +t subject"
    assert np.linalg.norm(last - centre) < 0.1 * np.linalg.norm(t)
    truth = blobs()
    assert (
        np.abs(result.template.numpy() - truth).mean()
        < 0.25 * np.abs(subjects[0].image.numpy() - truth).mean()
    )
    assert [h.iteration for h in result.history] == [0, 1, 2]
    assert all(h.registered == 2 and h.failed == 0 for h in result.history)
    assert result.labels is None and result.history[0].dice is None


def test_build_template_rejects_bad_input():
    one = AtlasSubject("a", Image.from_array(blobs()))
    vol = AtlasSubject("v", Image.from_array(np.zeros((8, 8, 8))))
    with pytest.raises(ValueError, match="at least 2"):
        build_template([one], "demons", 1)
    with pytest.raises(ValueError, match="all 2D or all 3D"):
        build_template([one, vol], "demons", 1)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        build_template([one, one], "nope", 1)
    with pytest.raises(ValueError, match="iterations must be"):
        build_template([one, one], "demons", -1)
    with pytest.raises(ValueError, match="init must be"):
        build_template([one, one], "demons", 1, init="median")


def test_sample_brains_template_sharpens_over_iterations():
    from regcore.atlas import load_sample_subjects

    subjects = load_sample_subjects(4)
    result = build_template(subjects, "demons", 2, evaluate_final=False)
    sharp = [h.sharpness for h in result.history]
    assert sharp[-1] > sharp[0], sharp
    assert result.history[0].dice is not None and 0.5 < result.history[0].dice <= 1.0
    assert result.initial_alignment_dice is not None
    assert result.template.geometry.same_grid(subjects[0].image.geometry)
    assert result.labels is not None and set(result.labels.present_labels()) <= set(
        subjects[0].labels.present_labels()
    )
    assert len(result.templates) == 3 and result.history[-1].distance_mm is None


def test_sample_templates_keep_the_background_dark_where_brains_touch_the_image_edge():
    """Several sample subjects have brain tissue on the image border. Demons used to push forces from the
    border-repeated tissue outside the image into the corners (|u| ~3x its size inside the brain), and the
    template grew a bright lobe in a corner (0.82 of the [0, 1] range at T1, 0.58 at T2)."""
    from regcore.atlas import load_sample_subjects

    subjects = load_sample_subjects(5)
    edges = [s.image.data[0] for s in subjects]
    assert max(float(torch.cat([e[:, :3].flatten(), e[:, -3:].flatten()]).max()) for e in edges) > 0.5
    result = build_template(subjects, "demons", 3, evaluate_final=False)
    for k, template in enumerate(result.templates):
        t = template.data[0]
        corners = torch.stack([t[:12, :12], t[:12, -12:], t[-12:, :12], t[-12:, -12:]])
        assert float(corners.max()) < 0.15, f"T{k}: corner max {float(corners.max()):.2f}"


# -- CLI -----------------------------------------------------------------------------------------------
def _write_subjects(folder: Path, n: int = 2, shape=(24, 28)) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    geom = Geometry.identity(shape, (1.5, 1.5))
    for k in range(n):
        img = blobs((k - 0.5, 0.5 * k), shape)
        save_image(Image.from_array(img, geom), folder / "images" / f"case{k}.nii.gz")
        save_image(
            Image.from_array((img > 0.5).astype(np.int64), geom, is_labels=True),
            folder / "labels" / f"case{k}_seg.nii.gz",
        )


def test_cli_builds_a_template_and_writes_nifti_and_history(tmp_path, capsys):
    _write_subjects(tmp_path / "data", n=3)
    out = tmp_path / "out"
    code = main(
        [
            "atlas",
            "--images",
            str(tmp_path / "data"),
            "--method",
            "demons",
            "--iterations",
            "1",
            "--init",
            "mean",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    for name in (
        "template.nii.gz",
        "template_labels.nii.gz",
        "template_0.nii.gz",
        "template_1.nii.gz",
        "history.csv",
        "history.json",
    ):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert [h["iteration"] for h in history["history"]] == [0, 1]
    assert history["subjects"] == ["case0", "case1", "case2"]
    lines = (out / "history.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("iteration,sharpness,distance_mm,dice") and len(lines) == 3


@pytest.mark.parametrize(
    "case, match",
    [
        ("empty", "no image files"),
        ("missing", "is not a folder"),
        ("dims", "all 2D or all 3D"),
        ("method", "unknown method 'nope'"),
        ("iterations", "iterations must be"),
        ("one", "at least 2 subjects"),
        ("labels", "label file"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(case, match, tmp_path, capsys):
    data = tmp_path / "data"
    args = ["--method", "demons", "--iterations", "1"]
    if case == "empty":
        data.mkdir()
    elif case == "dims":
        data.mkdir()
        save_image(Image.from_array(blobs()), data / "a.nii.gz")
        save_image(Image.from_array(np.random.default_rng(0).random((6, 7, 8))), data / "b.nii.gz")
    elif case in ("method", "iterations", "labels"):
        _write_subjects(data)
        if case == "method":
            args = ["--method", "nope"]
        elif case == "iterations":
            args = ["--iterations", "-1"]
        else:
            (data / "labels" / "case0_seg.nii.gz").unlink()
            save_image(
                Image.from_array(np.zeros((24, 28), np.int64), is_labels=True), data / "labels" / "x1.nii.gz"
            )
            save_image(
                Image.from_array(np.zeros((24, 28), np.int64), is_labels=True), data / "labels" / "x2.nii.gz"
            )
    elif case == "one":
        data.mkdir()
        save_image(Image.from_array(blobs()), data / "a.nii.gz")
    code = main(["atlas", "--images", str(data), *args, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("regcore atlas: error:"), err
    assert match in err
    assert not (tmp_path / "out" / "template.nii.gz").exists()


# -- page ----------------------------------------------------------------------------------------------
def test_atlas_page_builds_a_template_and_offers_the_downloads():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
        at.switch_page("pages/atlas.py").run()
        assert not at.exception and not at.error, [e.value for e in at.exception]
        assert "Atlas" in at.title[0].value
        at.slider(key="atlas_n").set_value(3).run()
        at.slider(key="atlas_iterations").set_value(1).run()
        at.radio(key="atlas_init").set_value("mean").run()
        at.button(key="atlas_run").click().run()
        assert not at.exception and not at.error, [e.value for e in at.exception] + [
            e.value for e in at.error
        ]
        result = at.session_state["atlas_result"]
        assert len(result.templates) == 2 and len(result.subjects) == 3
        labels = [b.label for b in at.get("download_button")]
        assert "Download template.nii.gz" in labels and "Download history.csv" in labels, labels
        assert len(at.get("plotly_chart")) >= 3, "template panels, sharpness and distance charts"
        at.radio(key="atlas_approach").set_value("Learned (VoxelMorph-style)").run()
        at.slider(key="atlas_steps").set_value(20).run()
        at.button(key="atlas_learn").click().run()
        assert not at.exception and not at.error, [e.value for e in at.exception] + [
            e.value for e in at.error
        ]
        assert len(at.session_state["atlas_learned"].loss) == 20
        assert "Download learned_template.nii.gz" in [b.label for b in at.get("download_button")]
    finally:
        os.chdir(old)


# -- learned template ----------------------------------------------------------------------------------
def test_learned_template_fits_the_group_and_keeps_it_central():
    from regcore.atlas.learned import LearnedTemplateConfig, learn_template

    t = np.array([2.0, 1.5])
    subjects = [
        AtlasSubject(f"s{k}", Image.from_array(blobs(sign * t)))
        for k, sign in enumerate((1.0, -1.0, 0.5, -0.5))
    ]
    config = LearnedTemplateConfig(steps=120, batch_size=4, widths=(8, 8, 8))
    result = learn_template(subjects, config)
    assert np.mean(result.loss[-10:]) < 0.5 * np.mean(result.loss[:10]), "the loss falls"
    assert result.template.geometry.same_grid(subjects[0].image.geometry)
    assert np.isfinite(result.template.numpy()).all() and result.labels is None
    centre = np.array(ndimage.center_of_mass(blobs()))
    found = np.array(ndimage.center_of_mass(np.clip(result.template.numpy(), 0, None)))
    assert np.linalg.norm(found - centre) < 0.5, "the group's centre, not one subject"
    assert result.sharpness > sharpness(
        Image.from_array(np.mean([blobs(s * t) for s in (1, -1, 0.5, -0.5)], 0))
    )


def test_conditional_learned_template_follows_the_attribute():
    """The small blob brightens with 'age': a deformation cannot do that, the conditional template must."""
    from regcore.atlas.learned import LearnedTemplateConfig, learn_template

    yy, xx = np.mgrid[:32, :32].astype(float)
    big = np.exp(-((yy - 16) ** 2 + (xx - 12) ** 2) / (2 * 4.0**2))
    small = np.exp(-((yy - 16) ** 2 + (xx - 23) ** 2) / (2 * 2.5**2))
    ages = [20.0, 35.0, 50.0, 65.0, 80.0]
    subjects = [
        AtlasSubject(
            f"age{a:g}", Image.from_array(big + (0.2 + 0.6 * (a - 20) / 60) * small), attributes={"age": a}
        )
        for a in ages
    ]
    config = LearnedTemplateConfig(steps=150, batch_size=5, widths=(8, 8, 8), attribute="age", sharp=0.0)
    result = learn_template(subjects, config)
    young, old = result.template_at(20.0).numpy(), result.template_at(80.0).numpy()
    ratio = [img[16, 23] / img[16, 12] for img in (young, old)]
    assert ratio[1] - ratio[0] > 0.3, ratio
    with pytest.raises(ValueError, match="attribute 'weight' missing"):
        learn_template(subjects, LearnedTemplateConfig(steps=1, attribute="weight"))


def test_cli_learned_template_on_the_sample_subjects(tmp_path, capsys):
    out = tmp_path / "learned"
    code = main(
        [
            "atlas",
            "--sample",
            "brain2d",
            "--subjects",
            "3",
            "--learned",
            "--steps",
            "20",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert summary["learned"] and summary["subjects"] == 3 and 0.0 < summary["dice"] <= 1.0
    assert (out / "template.nii.gz").is_file() and (out / "template_labels.nii.gz").is_file()
    assert len((out / "loss.csv").read_text(encoding="utf-8").splitlines()) == 21
    assert main(["atlas", "--sample", "brain2d", "--learned", "--steps", "0", "--out", str(out)]) == 2


def test_label_files_are_matched_by_name_even_with_extra_labels(tmp_path):
    from regcore.atlas import load_subjects

    geom = Geometry.identity((12, 14), (1.0, 1.0))
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for k in (0, 1, 2, 3):
        if k in (1, 3):
            save_image(
                Image.from_array(blobs((k, 0), (12, 14)), geom), tmp_path / "img" / f"subject_0{k}_t1.nii.gz"
            )
        save_image(
            Image.from_array(np.full((12, 14), k + 1, np.int64), geom, is_labels=True),
            tmp_path / "lab" / f"subject_0{k}_seg.nii.gz",
        )
    subjects = load_subjects(str(tmp_path / "img" / "*_t1.nii.gz"), tmp_path / "lab")
    assert [s.name for s in subjects] == ["subject_01_t1", "subject_03_t1"]
    assert [s.labels.present_labels() for s in subjects] == [[2], [4]]


@pytest.mark.slow
def test_ray_engine_builds_the_same_template_as_serial():
    pytest.importorskip("ray")
    subjects = [
        AtlasSubject(f"s{k}", Image.from_array(blobs((2 * s, s)))) for k, s in enumerate((1, -1, 0.5))
    ]
    ray_result = build_template(subjects, "demons", 1, init="mean", engine="ray", num_cpus=2)
    serial = build_template(subjects, "demons", 1, init="mean")
    assert torch.equal(ray_result.template.data, serial.template.data)
    assert ray_result.history_rows()[1]["sharpness"] == serial.history_rows()[1]["sharpness"]


def test_atlas_page_loads_subjects_from_a_server_folder_and_refuses_escapes(monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from regcore.data.samples import ensure_unit

    unit = ensure_unit("brain", 2, 2.0)
    monkeypatch.setenv("REGLAB_DATA_ROOTS", str(unit.parent))
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
        at.switch_page("pages/atlas.py").run()
        at.radio(key="atlas_source").set_value("A folder on the server").run()
        at.text_input(key="atlas_folder").set_value(unit.name).run()
        at.text_input(key="atlas_pattern").set_value("../*").run()
        at.button(key="atlas_load").click().run()
        assert any("must stay inside the folder" in e.value for e in at.error)
        at.text_input(key="atlas_pattern").set_value("subject_0[0-2]_t1.nii.gz").run()
        at.button(key="atlas_load").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        subjects = at.session_state["atlas_folder_subjects"]
        assert [s.name for s in subjects] == ["subject_00_t1", "subject_01_t1", "subject_02_t1"]
        assert all(s.labels is not None for s in subjects)
    finally:
        os.chdir(old)
