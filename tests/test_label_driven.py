"""label_driven family (Hu et al., MedIA 2018) and the prostate MR/TRUS loader: behaviour, not smoke."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from regcore.methods.learned.family import StepContext, get_family
from regcore.methods.learned.label_driven import multiscale_dice_loss
from regcore.train.config import config_from_dict

CASE = "case000000"


def _disc(shape, centre, radius):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return (np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius).astype(np.float32)


# -- loader --------------------------------------------------------------------------------------
def _copy_case(shared, tmp_path, case=CASE):
    root = tmp_path / "prostate_mr_us"
    src = shared / "prostate_mr_us"
    for sub in ("images", "labels", "landmarks"):
        (root / sub).mkdir(parents=True)
        for p in (src / sub).glob(f"{case}_*"):
            shutil.copy(p, root / sub / p.name)
    return root


def test_loader_names_missing_and_bad_files(shared_data, tmp_path):
    from regcore.data.prostate import load_case, prostate_cases

    with pytest.raises(ValueError, match="does not exist"):
        prostate_cases(tmp_path / "nowhere")
    root = _copy_case(shared_data, tmp_path)
    case = load_case(CASE, root)  # a complete copy loads
    assert case.mr.shape == case.us.shape == case.mr_gland.shape == (44, 59, 41) and case.has_landmarks
    (root / "labels" / f"{CASE}_mr_gland.nii.gz").unlink()
    with pytest.raises(ValueError, match=f"missing file .*{CASE}_mr_gland.nii.gz"):
        prostate_cases(root)
    shutil.copy(shared_data / "prostate_mr_us" / "labels" / f"{CASE}_mr_gland.nii.gz", root / "labels")
    (root / "images" / f"{CASE}_us.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match=f"cannot read .*{CASE}_us.nii.gz"):
        prostate_cases(root)
    with pytest.raises(ValueError, match="alignment"):
        load_case(CASE, root, alignment="corner")


def test_centre_alignment_raises_gland_dice_and_keeps_landmarks_consistent(shared_data):
    from regcore.data.prostate import gland_dice, prostate_cases

    centre = prostate_cases(shared_data / "prostate_mr_us")
    header = prostate_cases(shared_data / "prostate_mr_us", alignment="header")
    d_centre = np.array([gland_dice(c) for c in centre])
    d_header = np.array([gland_dice(c) for c in header])
    assert d_centre.mean() > d_header.mean() + 0.15 and d_centre.min() > 0.5, (d_centre, d_header)
    for c in centre:  # CSV centroids (shifted with the MR) sit on their label regions on the TRUS grid
        if not c.has_landmarks:
            continue
        for lab, pts in ((c.mr_landmarks, c.mr_points), (c.us_landmarks, c.us_points)):
            for i, p in zip(pts.ids, pts.points):
                idx = np.argwhere(lab.numpy() == int(i)).mean(0)
                assert np.linalg.norm(c.us.geometry.index_to_world_points(idx[None])[0] - p) < 0.5


# -- loss and training ----------------------------------------------------------------------------
def test_multiscale_dice_is_zero_when_aligned_and_guides_a_shift():
    shape = (24, 24)
    fixed = torch.from_numpy(_disc(shape, (12, 12), 5))[None, None]
    moving = torch.from_numpy(_disc(shape, (15, 12), 5))[None, None]  # moving = fixed shifted by +3 on axis 0
    zero = torch.zeros(1, 2, *shape)
    assert float(multiscale_dice_loss(fixed, fixed, zero)) < 1e-6
    shift = torch.zeros(1, 2, 1, 1, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.2)
    first = None
    for _ in range(40):
        loss = multiscale_dice_loss(fixed, moving, shift.expand(1, 2, *shape))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, moved = loss.item(), float(shift.detach()[0, 0])
    assert last < 0.5 * first and abs(moved - 3.0) < 0.7, (first, last, moved)
    with pytest.raises(ValueError, match="must be equal"):
        multiscale_dice_loss(fixed, moving[..., :20], zero)


def test_bad_family_config_names_the_field():
    fam = get_family("label_driven")
    with pytest.raises(ValueError, match="regularizer"):
        fam.make_config({"regularizer": "elastic"})
    with pytest.raises(ValueError, match="int_steps"):
        fam.make_config({"int_steps": 0})


def test_short_training_on_integer_labels_lowers_the_loss():
    """The engine's weak-supervision batch format (integer label maps), small 2D images, label loss only."""
    torch.manual_seed(0)
    cfg = config_from_dict(
        {
            "family": "label_driven",
            "dims": 2,
            "train_shape": [24, 24],
            "lr": 1e-2,
            "regularizer_weight": 0.1,
            "family_config": {"widths": [4, 8, 8], "int_steps": 3},
        }  # fmt: skip
    )
    fam = get_family("label_driven")
    nets = fam.build(2, cfg.family_config)
    opts = fam.optimizers(nets, cfg.lr)
    shape = (24, 24)
    fixed_lab = torch.from_numpy(_disc(shape, (12, 12), 6)).long()[None, None]
    moving_lab = torch.from_numpy(_disc(shape, (15, 10), 5)).long()[None, None]
    batch = {
        "fixed": fixed_lab.float() * 0.8,
        "moving": 1.0 - moving_lab.float() * 0.7,  # another "modality": bright background, dark structure
        "fixed_labels": fixed_lab,
        "moving_labels": moving_lab,
    }
    ctx = StepContext(config=cfg, family_config=cfg.family_config, similarity=torch.nn.Identity())
    losses = []
    for step in range(25):
        ctx.step = step
        losses.append(fam.train_step(nets, opts, batch, ctx)["dice"])
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


@pytest.mark.slow
def test_short_training_on_real_cases_lowers_the_loss(shared_data):
    from regcore.data.prostate import prostate_cases
    from regcore.methods.learned._label_driven_train import train

    cases = prostate_cases(shared_data / "prostate_mr_us", cases=["case000001", "case000002"])
    cfg = config_from_dict(
        {
            "family": "label_driven",
            "dims": 3,
            "spacing_mm": 2.0,
            "train_shape": [12, 12, 12],
            "epochs": 1,
            "steps_per_epoch": 30,
            "batch_size": 2,
            "lr": 5e-3,
            "augment": False,
            "intensity_augment": False,
            "regularizer_weight": 0.1,
            "family_config": {"widths": [8, 16, 16], "dice_sigmas": [0.0, 1.0]},
        }  # fmt: skip
    )
    out = train(cfg, cases, None, log=None)
    h = out["loss_history"]
    assert len(h) == 30 and np.mean(h[-5:]) < np.mean(h[:5]) - 0.03, h


# -- shipped weights -----------------------------------------------------------------------------
def test_shipped_weights_improve_mean_gland_dice_on_the_held_out_cases(shared_data):
    """Over both cases the shipped model never saw (one case alone is noise: the model card lists each)."""
    from regcore.data.prostate import HELD_OUT, gland_dice, load_case
    from regcore.methods.learned.inference import MODELS_DIR
    from regcore.register import run_registration

    weights = MODELS_DIR / "label_driven3d.pt"
    assert weights.is_file() and weights.with_suffix(".md").is_file()
    before, after = [], []
    for case_id in HELD_OUT:
        case = load_case(case_id, shared_data / "prostate_mr_us")
        result, metrics = run_registration(
            case.us, case.mr, "label_driven", {"device": "cpu"},
            fixed_labels=case.us_gland, moving_labels=case.mr_gland,
        )  # fmt: skip
        before.append(gland_dice(case))
        after.append(metrics["dice_mean"])
        assert result.displacement.shape == (1, 3, *case.us.shape) and metrics["folding_percent"] < 0.5
    assert np.mean(after) > np.mean(before) + 0.03, (before, after)
