"""evaluate(): one comparison-table row from a RegistrationResult (synthetic + real data)."""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest
import torch

from regcore.image import Geometry, Image, Landmarks
from regcore.methods.base import RegistrationResult
from regcore.metrics import evaluate, evaluate_identity, label_overlap
from regcore.spatial.warp import warp

EXPECTED_KEYS = {
    "method",
    "dice_mean",
    "dice",
    "hd95_mean_mm",
    "hd95",
    "assd_mean_mm",
    "assd",
    "tre_mean_mm",
    "tre_median_mm",
    "tre_std_mm",
    "tre",
    "folding_percent",
    "sdlogj",
    "ndv_percent",
    "jacobian_min",
    "ncc",
    "mse",
    "ssim",
    "runtime_s",
    "peak_memory_mb",
    "device",
    "warnings",
}
SHIFT = (3.0, -2.0)  # voxels: moving content sits at fixed content + SHIFT


def synthetic_case():
    """Fixed disk + square, moving = the same shifted by SHIFT; landmarks in LPS mm; spacing (1.5, 0.8)."""
    geom = Geometry((40, 44), (1.5, 0.8), (12.0, -3.0), ((1.0, 0.0), (0.0, 1.0)))
    i, j = np.meshgrid(np.arange(40), np.arange(44), indexing="ij")
    labels = np.zeros((40, 44), np.int64)
    labels[(i - 18) ** 2 + (j - 20) ** 2 < 64] = 1
    labels[25:32, 5:12] = 2
    moving_labels = np.roll(labels, (3, -2), axis=(0, 1))
    names = {1: "disk", 2: "square"}
    fixed = Image.from_array(labels.astype(np.float32) / 2, geom, name="fixed")
    moving = Image.from_array(moving_labels.astype(np.float32) / 2, geom, name="moving")
    idx = np.array([[18.0, 20.0], [28.0, 8.0], [10.5, 30.25]])
    fixed_lm = Landmarks(geom.index_to_world_points(idx), ["c", "s", "x"])
    moving_lm = Landmarks(geom.index_to_world_points(idx + SHIFT), ["c", "s", "x"])
    fl = Image.from_array(labels, geom, is_labels=True, label_names=names)
    ml = Image.from_array(moving_labels, geom, is_labels=True, label_names=names)
    return fixed, moving, fl, ml, fixed_lm, moving_lm


def registered_result(fixed, moving) -> RegistrationResult:
    u = torch.tensor(SHIFT).view(1, 2, 1, 1).expand(1, 2, *fixed.shape).clone()
    warped = moving.with_data(warp(moving.batch(), u)[0])
    return RegistrationResult(
        "oracle", fixed, moving, warped, u, runtime_s=0.5, peak_memory_mb=3.0, device="cpu"
    )


def test_evaluate_oracle_vs_identity():
    fixed, moving, fl, ml, flm, mlm = synthetic_case()
    row = evaluate(
        registered_result(fixed, moving),
        fixed_labels=fl,
        moving_labels=ml,
        fixed_landmarks=flm,
        moving_landmarks=mlm,
    )
    assert set(row) == EXPECTED_KEYS
    json.dumps(row, allow_nan=False)  # strict JSON: plain types, no NaN
    assert row["method"] == "oracle" and row["runtime_s"] == 0.5 and row["device"] == "cpu"
    assert row["dice"] == {"disk": 1.0, "square": 1.0} and row["hd95_mean_mm"] == 0.0
    assert row["tre_mean_mm"] == pytest.approx(0.0, abs=1e-9)
    assert row["folding_percent"] == 0.0 and row["sdlogj"] == 0.0 and row["ndv_percent"] == 0.0
    base = evaluate_identity(
        fixed, moving, fixed_labels=fl, moving_labels=ml, fixed_landmarks=flm, moving_landmarks=mlm
    )
    assert set(base) == EXPECTED_KEYS and base["method"] == "identity"
    assert base["dice_mean"] < 0.8 and base["hd95_mean_mm"] > 1.0
    assert base["tre_mean_mm"] == pytest.approx(math.hypot(3 * 1.5, 2 * 0.8))
    assert base["tre"].keys() == {"c", "s", "x"} and base["ncc"] < row["ncc"]
    direct = label_overlap(fl, ml)
    assert base["dice"] == direct["dice"] and base["hd95"] == direct["hd95"]


def test_missing_inputs_give_none_and_warnings():
    fixed, moving, fl, ml, flm, mlm = synthetic_case()
    row = evaluate_identity(fixed, moving, fixed_labels=fl, fixed_landmarks=flm)
    assert set(row) == EXPECTED_KEYS
    assert row["dice_mean"] is None and row["dice"] == {} and row["tre_mean_mm"] is None
    assert len(row["warnings"]) == 2
    plain = evaluate_identity(fixed, moving)
    assert plain["warnings"] == [] and plain["hd95_mean_mm"] is None and plain["mse"] > 0


def test_a_constant_image_is_named_in_a_warning():
    fixed, moving, *_ = synthetic_case()
    blank = moving.with_data(torch.zeros_like(moving.data))
    row = evaluate_identity(fixed, blank)
    assert row["warnings"] == [
        f"moving image {blank.name!r} is constant (every voxel 0): there is nothing to align, check the file"
    ]


def test_absent_structure_is_reported_not_raised():
    fixed, moving, fl, ml, *_ = synthetic_case()
    lost = ml.with_data(torch.where(ml.data == 2, 0, ml.data))
    row = evaluate_identity(fixed, moving, fixed_labels=fl, moving_labels=lost)
    assert row["dice"]["square"] == 0.0 and row["hd95"]["square"] is None
    assert any("square" in w for w in row["warnings"])
    json.dumps(row, allow_nan=False)


def test_bad_input():
    fixed, moving, fl, ml, *_ = synthetic_case()
    with pytest.raises(TypeError, match="RegistrationResult"):
        evaluate({"displacement": None})
    other = Image.from_array(np.zeros((40, 45), np.int64), is_labels=True)
    with pytest.raises(ValueError, match="fixed grid"):
        evaluate_identity(fixed, moving, fixed_labels=fl, moving_labels=other)
    bad = registered_result(fixed, moving)
    bad.displacement = torch.zeros(1, 2, 40, 43)
    with pytest.raises(ValueError, match="displacement"):
        evaluate(bad)
    with pytest.raises(TypeError, match="Image"):
        evaluate_identity(fixed.data, moving)


# -- real data ----------------------------------------------------------------------------


def _load(path, labels=False):
    import nibabel as nib

    arr = np.asarray(nib.load(str(path)).dataobj)
    arr = arr.astype(np.int64) if labels else arr.astype(np.float32)
    return arr.reshape(arr.shape[:2]) if arr.ndim == 3 and arr.shape[2] == 1 else arr


def _names(shared_data) -> dict[int, str]:
    with open(shared_data / "brain3d" / "label_names_seg35.csv", encoding="utf-8") as f:
        return {int(r["seg35_id"]): r["name"] for r in csv.DictReader(f)}


def test_real_brain_slices_identity_matches_monai(shared_data):
    from monai.metrics import compute_hausdorff_distance

    d = shared_data / "brain2d"
    fa, ma = (_load(d / "images" / f"OASIS_OAS1_045{k}_MR1_axial103.nii.gz") for k in (5, 6))
    fl, ml = (_load(d / "labels" / f"OASIS_OAS1_045{k}_MR1_axial103_seg35.nii.gz", True) for k in (5, 6))
    names = _names(shared_data)
    row = evaluate_identity(
        Image.from_array(fa), Image.from_array(ma), fixed_labels=fl, moving_labels=ml, label_names=names
    )
    json.dumps(row, allow_nan=False)
    assert 0.3 < row["dice_mean"] < 0.95 and row["ncc"] > 0.5
    assert "Left-Cerebral-White-Matter" in row["dice"]
    for lab in (1, 2, 3):
        hd = compute_hausdorff_distance(
            torch.tensor(ml == lab)[None, None],
            torch.tensor(fl == lab)[None, None],
            include_background=True,
            percentile=95,
        )
        assert row["hd95"][names[lab]] == pytest.approx(float(hd), rel=1e-5)


@pytest.mark.slow
def test_real_brain_3d_full_evaluation_speed(shared_data):
    """35 labels at 160x192x224: the whole row (Dice, HD95, ASSD, Jacobian, NDV) in seconds."""
    d = shared_data / "brain3d"
    fa, ma = (_load(d / "images" / f"OASIS_OAS1_045{k}_MR1.nii.gz") for k in (5, 6))
    fl, ml = (_load(d / "labels" / f"OASIS_OAS1_045{k}_MR1_seg35.nii.gz", True) for k in (5, 6))
    t0 = time.perf_counter()
    row = evaluate_identity(
        Image.from_array(fa),
        Image.from_array(ma),
        fixed_labels=fl,
        moving_labels=ml,
        label_names=_names(shared_data),
    )
    elapsed = time.perf_counter() - t0
    print(
        f"3D evaluate_identity: {elapsed:.1f} s, dice_mean {row['dice_mean']:.3f}, "
        f"hd95 {row['hd95_mean_mm']:.2f} mm"
    )
    assert len(row["dice"]) >= 30 and 0.4 < row["dice_mean"] < 0.75
    assert elapsed < 120
