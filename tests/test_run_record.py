"""RunRecord: the typed run the app, the QA report and `regcore report` share; per-landmark errors.

Analytic case: moving = fixed content shifted by a known translation, registered by the exact
(oracle) displacement, so before/after metrics, landmark errors and the Jacobian are known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from regcore.data import Pair
from regcore.image import Geometry, Image, Landmarks
from regcore.methods.base import RegistrationResult
from regcore.metrics import evaluate, evaluate_identity, target_registration_error
from regcore.metrics.landmarks import landmark_errors
from regcore.run_folder import RUN_FILES, load_run, save_run
from regcore.run_record import RunRecord, RunSlice
from regcore.spatial.warp import warp

SHIFT = (3.0, -2.0)  # voxels: moving content sits at fixed content + SHIFT
SPACING = (1.5, 0.8)


def shifted_pair(shape=(40, 44)) -> Pair:
    geom = Geometry(shape, SPACING, (12.0, -3.0), ((1.0, 0.0), (0.0, 1.0)))
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    labels = np.zeros(shape, np.int64)
    labels[(i - 18) ** 2 + (j - 20) ** 2 < 64] = 1
    labels[25:32, 5:12] = 2
    moving_labels = np.roll(labels, (3, -2), axis=(0, 1))
    names = {1: "disk", 2: "square"}
    idx = np.array([[18.0, 20.0], [28.0, 8.0], [10.5, 30.25]])
    return Pair(
        name="shifted",
        fixed=Image.from_array(labels.astype(np.float32) / 2, geom),
        moving=Image.from_array(moving_labels.astype(np.float32) / 2, geom),
        fixed_labels=Image.from_array(labels, geom, is_labels=True, label_names=names),
        moving_labels=Image.from_array(moving_labels, geom, is_labels=True, label_names=names),
        fixed_landmarks=Landmarks(geom.index_to_world_points(idx), ["c", "s", "x"]),
        moving_landmarks=Landmarks(geom.index_to_world_points(idx + SHIFT), ["c", "s", "x"]),
        label_names=names,
    )


def oracle_record(pair: Pair | None = None) -> RunRecord:
    pair = pair or shifted_pair()
    u = torch.tensor(SHIFT).view(1, 2, 1, 1).expand(1, 2, *pair.fixed.shape).clone()
    warped = pair.moving.with_data(warp(pair.moving.batch(), u)[0])
    result = RegistrationResult("oracle", pair.fixed, pair.moving, warped, u, runtime_s=0.5, device="cpu")
    metrics = evaluate(result, **pair.annotations)
    return RunRecord(pair, result, metrics, label="oracle run")


def test_before_metrics_is_evaluate_identity_computed_once():
    rec = oracle_record()
    p = rec.pair
    expected = evaluate_identity(
        p.fixed,
        p.moving,
        fixed_labels=p.fixed_labels,
        moving_labels=p.moving_labels,
        fixed_landmarks=p.fixed_landmarks,
        moving_landmarks=p.moving_landmarks,
    )
    before = rec.before_metrics
    assert before == expected
    assert rec.before_metrics is before, "cached on the record"
    assert before["dice_mean"] < 0.8 and rec.metrics["dice_mean"] == 1.0
    assert before["tre_mean_mm"] == pytest.approx(np.linalg.norm(np.multiply(SHIFT, SPACING)))


def test_landmark_errors_before_after_and_fixed_grid_positions():
    rec = oracle_record()
    lm = rec.landmarks
    shift_mm = np.linalg.norm(np.multiply(SHIFT, SPACING))
    np.testing.assert_allclose(lm.before_mm, shift_mm)
    np.testing.assert_allclose(lm.after_mm, 0.0, atol=1e-9)
    np.testing.assert_allclose(lm.moving_index, lm.fixed_index + SHIFT)
    np.testing.assert_allclose(lm.mapped_index, lm.moving_index, atol=1e-9)
    assert lm.ids == ["c", "s", "x"] and len(lm) == 3
    # the same numbers target_registration_error (and so evaluate) reports
    tre = target_registration_error(
        rec.pair.fixed_landmarks,
        rec.pair.moving_landmarks,
        rec.result.displacement,
        rec.result.fixed.geometry,
    )
    assert lm.stats()["tre"] == tre["tre"] and lm.stats("before")["mean_mm"] == pytest.approx(shift_mm)
    assert rec.metrics["tre"] == pytest.approx(tre["tre"])


def test_landmark_errors_identity_and_validation():
    p = shifted_pair()
    lm = landmark_errors(p.fixed_landmarks, p.moving_landmarks)
    np.testing.assert_allclose(lm.after_mm, lm.before_mm)
    assert lm.fixed_index is None and lm.mapped_index is None
    with pytest.raises(TypeError, match="fixed_geometry"):
        landmark_errors(p.fixed_landmarks, p.moving_landmarks, torch.zeros(1, 2, 40, 44))
    with pytest.raises(ValueError, match="does not match the fixed grid"):
        landmark_errors(p.fixed_landmarks, p.moving_landmarks, torch.zeros(1, 2, 40, 45), p.fixed.geometry)
    with pytest.raises(ValueError, match="which must be"):
        lm.stats("during")


def test_jacobian_of_a_linear_field_is_analytic():
    pair = shifted_pair()
    a = np.array([[0.1, 0.05], [-0.02, -0.2]])
    idx = np.stack(np.meshgrid(*(np.arange(s) for s in pair.fixed.shape), indexing="ij"))
    u = torch.tensor(np.einsum("ij,j...->i...", a, idx)[None], dtype=torch.float32)
    result = RegistrationResult("linear", pair.fixed, pair.moving, pair.moving, u)
    rec = RunRecord(pair, result, {})
    np.testing.assert_allclose(rec.jacobian, np.linalg.det(np.eye(2) + a), rtol=1e-5)
    assert rec.jacobian.shape == pair.fixed.shape


def test_slices_2d_and_3d():
    rec = oracle_record()
    s = rec.slice()
    assert (
        isinstance(s, RunSlice)
        and s.axis is None
        and s.fixed.shape == (40, 44)
        and s.disp.shape == (2, 40, 44)
    )
    np.testing.assert_array_equal(s.warped_labels, s.fixed_labels)  # the oracle warp is exact on labels
    geom = Geometry.identity((12, 14, 10), (1.0, 1.2, 2.0))
    img = Image.from_array(np.random.default_rng(0).random((12, 14, 10)).astype(np.float32), geom)
    u = torch.zeros(1, 3, 12, 14, 10)
    u[:, 2] = 0.5
    rec3 = RunRecord(Pair("3d", img, img), RegistrationResult("x", img, img, img, u), {})
    s3 = rec3.slice()
    assert (s3.axis, s3.index) == (2, 5) and s3.fixed.shape == (12, 14) and s3.disp.shape == (2, 12, 14)
    assert s3.fixed_labels is None and rec3.landmarks is None and rec3.warped_labels is None
    assert rec3.slice(0, 3).fixed.shape == (14, 10)
    with pytest.raises(ValueError, match="index must be in"):
        rec3.slice(0, 99)


def test_record_validates_its_parts():
    rec = oracle_record()
    with pytest.raises(TypeError, match="pair must be a regcore.data.Pair"):
        RunRecord("pair", rec.result, {})
    with pytest.raises(TypeError, match="RegistrationResult"):
        RunRecord(rec.pair, {"result": 1}, {})
    bad = RegistrationResult(
        "x", rec.result.fixed, rec.result.moving, rec.result.warped, torch.zeros(1, 2, 3, 3)
    )
    with pytest.raises(ValueError, match="displacement must be"):
        RunRecord(rec.pair, bad, {})


def test_save_and_load_run_round_trip(tmp_path):
    rec = oracle_record()
    paths = save_run(rec, tmp_path / "run")
    assert set(paths) == set(RUN_FILES) and all(p.is_file() for p in paths.values())
    back = load_run(tmp_path / "run")
    assert back.metrics == json.loads(json.dumps(rec.metrics)) and back.before == rec.before_metrics
    assert back.label == "oracle run" and back.pair_name == "shifted" and back.method == "oracle"
    assert back.label_names == {1: "disk", 2: "square"}
    np.testing.assert_allclose(back.result.displacement.numpy(), rec.result.displacement.numpy(), atol=1e-5)
    np.testing.assert_array_equal(back.warped_labels.numpy(), rec.warped_labels.numpy())
    np.testing.assert_allclose(back.landmarks.after_mm, rec.landmarks.after_mm, atol=1e-4)
    np.testing.assert_allclose(back.jacobian, rec.jacobian, atol=1e-4)


def test_run_folder_records_the_settings_the_method_ran_with(tmp_path):
    """run.json keeps every config field, with fireants' auto preset resolved for this image, and load_run
    gives them back as the result's config (a dict); a loaded run saves them again unchanged."""
    from regcore.methods.classical.fireants import resolve_preset
    from regcore.methods.registry import get

    pair = shifted_pair()
    spec = get("fireants")
    result = spec.factory().register(pair.fixed, pair.moving, spec.make_config({"window": 9}))
    save_run(RunRecord(pair, result, evaluate(result, **pair.annotations)), tmp_path / "run")
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    ran = resolve_preset(spec.make_config({}), tuple(pair.fixed.shape), pair.fixed.spacing)
    assert settings["preset"] == "auto" and settings["iterations"] == list(ran.iterations)  # auto, as it ran
    assert settings["window"] == ran.window and settings["optimizer"] == "gradient"  # auto wins over window 9
    back = load_run(tmp_path / "run")
    assert back.result.config == settings
    save_run(back, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "run.json").read_text())["settings"] == settings
    save_run(oracle_record(), tmp_path / "oracle")  # a result without a config, run in one stage
    info = json.loads((tmp_path / "oracle" / "run.json").read_text())
    assert info["settings"] is None and info["stages"] is None


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        load_run(tmp_path / "absent")
    save_run(oracle_record(), tmp_path / "run")
    (tmp_path / "run" / "moving.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"moving\.nii\.gz: file not found"):
        load_run(tmp_path / "run")
