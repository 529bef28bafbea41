"""`regcore` CLI: methods --json, a register round trip checked with SimpleITK, the QA report from a run
folder (`register --report`, `report RUN_DIR`), bad input -> exit 2 with one line naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import smooth_random_field
from scipy.ndimage import gaussian_filter

from regcore.cli import main
from regcore.image import Geometry, Image
from regcore.io import save_image
from regcore.spatial.warp import warp, warp_labels


def write_pair(folder, size: int = 48):
    """Fixed on an LPS grid; moving = deformed content stored FLIPPED along axis 0 (another grid)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int64)
    for k in (1, 2, 3):
        cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
        labels[np.hypot(yy - cy, xx - cx) < rng.uniform(0.1, 0.2) * size] = k
    img = gaussian_filter(labels * 0.2, 1.0) + 0.2 * gaussian_filter(rng.standard_normal((size, size)), 2.0)
    u = smooth_random_field((size, size), 2.5, seed=2, sigma=5)
    m = torch.tensor(img, dtype=torch.float32)[None, None]
    ml = torch.tensor(labels)[None, None]
    geom = Geometry((size, size), (1.0, 1.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
    flipped = Geometry((size, size), (1.0, 1.0), (size - 1.0, 0.0), ((-1.0, 0.0), (0.0, 1.0)))
    paths = {
        "fixed": folder / "fixed.nii.gz",
        "moving": folder / "moving.nii.gz",
        "fixed_labels": folder / "fixed_seg.nii.gz",
        "moving_labels": folder / "moving_seg.nii.gz",
    }
    save_image(Image(warp(m, u)[0], geom), paths["fixed"])
    save_image(Image(warp_labels(ml, u)[0], geom, is_labels=True), paths["fixed_labels"])
    save_image(Image(m[0].flip(1), flipped), paths["moving"])
    save_image(Image(ml[0].flip(1), flipped, is_labels=True), paths["moving_labels"])
    return paths


def test_methods_json_lists_every_method(capsys):
    from regcore.methods.registry import all_specs

    assert main(["methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in listed} == {s.name for s in all_specs()}
    for m in listed:
        assert {"name", "family", "supervision", "dims", "needs_training", "available", "parameters"} <= set(
            m
        )
        for p in m["parameters"]:
            assert {"name", "type", "default", "range", "help"} <= set(p) and p["help"]
    names = {m["name"] for m in listed}
    assert {
        "bspline",
        "demons",
        "sitk_affine_mi",
        "sitk_bspline",
        "sitk_demons",
        "elastix",
        "ants_syn",
    } <= names


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """One `regcore register ... --report` run (demons, 48x48): (input paths, output folder, exit code)."""
    folder = tmp_path_factory.mktemp("cli")
    paths = write_pair(folder)
    out = folder / "out"
    code = main(
        [
            "register",
            "--fixed",
            str(paths["fixed"]),
            "--moving",
            str(paths["moving"]),
            "--method",
            "demons",
            "--fixed-labels",
            str(paths["fixed_labels"]),
            "--moving-labels",
            str(paths["moving_labels"]),
            "--set",
            "iterations=30",
            "--set",
            "levels=2",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
            "--report",
        ]
    )
    return paths, out, code


def test_register_round_trip_matches_simpleitk(registered):
    paths, out, code = registered
    assert code == 0
    for name in (
        "warped.nii.gz",
        "displacement.nii",
        "warped_labels.nii.gz",
        "metrics.json",
        "fixed.nii.gz",
        "moving.nii.gz",
        "fixed_labels.nii.gz",
        "moving_labels.nii.gz",
        "metrics_before.json",
        "run.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in (
        "method",
        "dice_mean",
        "dice",
        "hd95_mean_mm",
        "folding_percent",
        "sdlogj",
        "runtime_s",
        "peak_memory_mb",
        "device",
    ):
        assert key in metrics, key
    assert metrics["method"] == "demons" and metrics["device"] == "cpu"
    settings = json.loads((out / "run.json").read_text(encoding="utf-8"))["settings"]
    assert settings["iterations"] == [30, 30] and settings["levels"] == 2  # the --set values, per level
    assert settings["force"] == "symmetric" and settings["sigma_elastic"] == 1.0  # the defaults too
    before = json.loads((out / "metrics_before.json").read_text(encoding="utf-8"))
    assert before["method"] == "identity" and before["folding_percent"] == 0.0

    # Identity Dice (moving resampled through physical space, flip undone) must be lower.
    from regcore.io import load_image
    from regcore.preprocess import resample_to

    fl = load_image(paths["fixed_labels"], is_labels=True)
    ml = resample_to(load_image(paths["moving_labels"], is_labels=True), fl.geometry)
    ident = np.mean(
        [
            2
            * ((fl.numpy() == k) & (ml.numpy() == k)).sum()
            / ((fl.numpy() == k).sum() + (ml.numpy() == k).sum())
            for k in (1, 2, 3)
        ]
    )
    assert metrics["dice_mean"] > ident + 0.03
    assert before["dice_mean"] == pytest.approx(ident, abs=1e-6), "metrics_before.json is the identity row"

    # SimpleITK reads the field as a transform and reproduces warped.nii.gz from the ORIGINAL moving file.
    fixed = sitk.ReadImage(str(paths["fixed"]))
    field = sitk.ReadImage(str(out / "displacement.nii"), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    resampled = sitk.Resample(
        sitk.ReadImage(str(paths["moving"]), sitk.sitkFloat32), fixed, tx, sitk.sitkLinear, 0.0
    )
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped.nii.gz")))
    theirs = sitk.GetArrayFromImage(resampled)
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(ours[inner] - theirs[inner]).max() < 2e-2 * (np.ptp(ours) + 1e-6)


def test_register_report_is_offline_html_with_before_and_after(registered):
    _, out, code = registered
    assert code == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html.lower() and "https://" not in html
    assert html.count("data:image/png;base64,") == 10, "8 image panels + 2 contour panels (labels given)"
    assert "demons" in html and "fixed.nii.gz &lt;- moving.nii.gz" in html
    assert "Per structure" in html and "Dice before" in html


def test_report_command_rewrites_the_report_from_the_run_folder(registered, capsys):
    _, out, code = registered
    assert code == 0
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert str(out / "report.html") in capsys.readouterr().err
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 10
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    from regcore.viz import format_number

    assert format_number(metrics["dice_mean"]) in html, "the summary shows the run's own metrics"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_report_errors_name_the_file_and_exit_2(registered, tmp_path, capsys):
    import shutil

    _, out, code = registered
    assert code == 0
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = _one_line_error(capsys)
    assert "nowhere" in err and "not a folder" in err
    for missing in ("fixed.nii.gz", "displacement.nii", "metrics.json"):
        broken = tmp_path / f"no_{missing.split('.')[0]}"
        shutil.copytree(out, broken)
        (broken / missing).unlink()
        assert main(["report", str(broken)]) == 2, missing
        err = _one_line_error(capsys)
        assert str(broken / missing) in err and "file not found" in err, err
    bad_json = tmp_path / "bad_json"
    shutil.copytree(out, bad_json)
    (bad_json / "metrics.json").write_text("{not json", encoding="utf-8")
    assert main(["report", str(bad_json)]) == 2
    err = _one_line_error(capsys)
    assert str(bad_json / "metrics.json") in err and "not valid JSON" in err
    bad_field = tmp_path / "bad_field"
    shutil.copytree(out, bad_field)
    (bad_field / "displacement.nii").write_bytes(b"garbage")
    assert main(["report", str(bad_field)]) == 2
    assert str(bad_field / "displacement.nii") in _one_line_error(capsys)


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    paths = write_pair(tmp_path, size=16)
    base = [
        "register",
        "--fixed",
        str(paths["fixed"]),
        "--moving",
        str(paths["moving"]),
        "--out",
        str(tmp_path / "o"),
    ]
    cases = [
        (
            [
                "register",
                "--fixed",
                str(tmp_path / "nope.nii.gz"),
                "--moving",
                str(paths["moving"]),
                "--method",
                "demons",
                "--out",
                str(tmp_path / "o"),
            ],
            "nope.nii.gz",
        ),
        (base + ["--method", "no_such_method"], "unknown method 'no_such_method'"),
        (base + ["--method", "demons", "--set", "iterations"], "--set expects key=value"),
        (base + ["--method", "demons", "--set", "bogus=1"], "unknown parameter 'bogus'"),
        (base + ["--method", "demons", "--set", "iterations=-5"], r"iterations must be in"),
        (base + ["--method", "demons", "--fixed-labels", str(paths["fixed_labels"])], "--moving-labels"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert expected in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["register", "--fixed", "a.nii.gz"])
    assert exc.value.code == 2


def test_train_without_config_file_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys)
    assert (
        err
        == f"regcore train: error: --config must be an existing file, got {str(tmp_path / 'missing.json')!r}"
    )
    assert not (tmp_path / "run").exists(), "nothing is written for a bad config"
