"""Registration uncertainty (regcore.uncertainty): the TTA flip mapping (analytic), member statistics,
label propagation, calibration (cross-checked with scipy), one short real TTA run, the CLI, and the
Evaluate page's Uncertainty section (AppTest)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from regcore.image import Image
from regcore.spatial.warp import warp
from regcore.uncertainty import calibrate, estimate_uncertainty
from regcore.uncertainty.fields import error_mm, field_statistics
from regcore.uncertainty.labels import label_entropy, label_probabilities
from regcore.uncertainty.tta import (
    Augmentation,
    augment_image,
    default_augmentations,
    flip_image,
    unflip_displacement,
)

ROOT = Path(__file__).resolve().parents[1]


def _smooth_field(shape, amplitude=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn((1, len(shape), *shape), generator=g)
    from regcore.spatial.smooth import gaussian_smooth

    u = gaussian_smooth(u, 4.0)
    return u / u.abs().max() * amplitude


# -- TTA flip mapping ------------------------------------------------------------------------------
@pytest.mark.parametrize("axes", [(0,), (1,), (0, 1)])
def test_unflip_maps_a_flipped_pair_solution_back_exactly(axes):
    """If u solves (f, m), the flipped pair (f o F, m o F) is solved by u' = unflip(u) (an involution), and
    warping the flipped moving image with u' equals flipping the warped image."""
    shape = (24, 20)
    y, x = torch.meshgrid(torch.linspace(0, 1, shape[0]), torch.linspace(0, 1, shape[1]), indexing="ij")
    moving = (torch.sin(7 * y) * torch.cos(5 * x) + 2 * y + x)[None, None]
    u = _smooth_field(shape)
    warped = warp(moving, u)  # = f, the fixed image u solves exactly
    u_flipped_frame = unflip_displacement(u, axes)  # the field in the flipped frame
    warped_flipped = warp(flip_image(moving[0], axes)[None], u_flipped_frame)
    torch.testing.assert_close(warped_flipped[0], flip_image(warped[0], axes), atol=1e-5, rtol=0)
    torch.testing.assert_close(unflip_displacement(u_flipped_frame, axes), u)


def test_unflip_of_a_constant_shift_negates_that_component_only():
    u = torch.zeros(1, 3, 4, 5, 6)
    u[:, 0], u[:, 1], u[:, 2] = 1.5, -2.0, 0.25
    v = unflip_displacement(u, (1,))
    assert torch.all(v[:, 0] == 1.5) and torch.all(v[:, 1] == 2.0) and torch.all(v[:, 2] == 0.25)


def test_augmentations_keep_the_range_and_start_with_the_identity():
    augs = default_augmentations(2, 5, seed=3)
    assert augs[0] == Augmentation() and len(augs) == 5 and all(a.flips for a in augs[1:])
    assert all(1 / 1.2 - 1e-9 <= a.gamma <= 1.2 + 1e-9 for a in augs)
    img = Image.from_array(np.linspace(0, 10, 20 * 16).reshape(20, 16), spacing=2.0)
    same = augment_image(img, Augmentation(), torch.Generator())
    torch.testing.assert_close(same.data, img.data)
    with pytest.raises(ValueError, match="count"):
        default_augmentations(2, 1)


# -- statistics and labels -----------------------------------------------------------------------------
def test_variance_is_zero_when_all_members_agree_and_matches_numpy_otherwise():
    u = _smooth_field((16, 12))
    mean, var = field_statistics(torch.stack([u, u, u]), (2.0, 1.0))
    torch.testing.assert_close(mean, u)
    assert float(var.abs().max()) == 0.0
    stack = torch.stack([u, u + 1.0, u - 0.5])
    _, var = field_statistics(stack, (2.0, 1.0))
    shifts = np.array([0.0, 1.0, -0.5])
    expected = np.var(shifts * 2.0, ddof=1) + np.var(shifts * 1.0, ddof=1)  # mm^2, both components
    assert torch.allclose(var, torch.full_like(var, expected))
    with pytest.raises(ValueError, match="at least 2"):
        field_statistics(u[None], (1.0, 1.0))


def test_label_entropy_is_zero_when_members_agree_and_one_bit_for_a_split():
    labels = torch.zeros(1, 10, 10)
    labels[:, :, 5:] = 1
    same = torch.zeros(4, 1, 2, 10, 10)
    values, p = label_probabilities(labels, same)
    assert values == [0, 1]
    torch.testing.assert_close(p[1], (labels[0] == 1).float())
    assert float(label_entropy(p).max()) == 0.0
    split = same.clone()
    split[2:, 0, 1] = 1.0  # half the members sample one column to the right (axis 1 = columns)
    _, p = label_probabilities(labels, split)
    h = label_entropy(p)
    assert torch.allclose(h[:, 4], torch.ones(10)), "the column at the boundary: half 0, half 1 -> 1 bit"
    assert float(h[:, :4].max()) == 0.0 and float(h[:, 5:9].max()) == 0.0
    assert torch.allclose(h[:, 9], torch.ones(10)), "the last column samples outside (background) for half"


# -- calibration -----------------------------------------------------------------------------------------
def test_spearman_matches_scipy_and_is_high_when_the_error_follows_the_std():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    std = rng.uniform(0.1, 3.0, size=(40, 30))
    error = np.abs(std * rng.normal(1.0, 0.3, size=std.shape))  # error grows with std, plus noise
    mask = np.zeros_like(std, bool)
    mask[5:35, 5:25] = True
    cal = calibrate(std, error, mask)
    assert cal.spearman == pytest.approx(spearmanr(std[mask], error[mask]).statistic)
    assert cal.spearman > 0.8 and cal.voxels == mask.sum()
    assert len(cal.bins) == 10 and sum(b.voxels for b in cal.bins) == mask.sum()
    means = [b.mean_error_mm for b in cal.bins]
    assert means[-1] > 3 * means[0], "reliability curve rises"
    unrelated = calibrate(std, rng.permutation(error.ravel()).reshape(error.shape), mask)
    assert abs(unrelated.spearman) < 0.15
    assert math.isnan(calibrate(np.ones_like(std), error).spearman)
    with pytest.raises(ValueError, match="shape"):
        calibrate(std, error[:-1])


def test_error_mm_uses_the_voxel_spacing():
    u = torch.zeros(1, 2, 4, 4)
    t = torch.zeros(1, 2, 4, 4)
    t[:, 0] = 1.0  # one voxel along axis 0
    assert torch.allclose(error_mm(u, t, (2.0, 0.5)), torch.full((4, 4), 2.0))


# -- one short real run ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def brain_pair():
    from regcore.data import sample_pair

    try:
        return sample_pair("brain", dims=2, fixed=2, moving=3, resolution_mm=2.0)
    except Exception as e:  # noqa: BLE001 - sample templates missing on this machine
        pytest.skip(f"brain sample unavailable: {e}")


def test_tta_on_a_sample_pair_gives_maps_and_calibration(brain_pair):
    res = estimate_uncertainty(brain_pair, "tta", method="sitk_demons", members=3)
    shape = brain_pair.fixed.shape
    assert res.samples.shape == (3, 1, 2, *shape) and res.variance_mm2.shape == shape
    assert float(res.variance_mm2.min()) >= 0 and float(res.variance_mm2[res.mask].mean()) > 0
    assert res.label_probability is not None
    torch.testing.assert_close(res.label_probability.sum(0), torch.ones(shape))
    assert float(res.label_entropy_bits.max()) <= math.log2(len(res.label_values)) + 1e-6
    cal = res.calibration
    assert cal is not None and -1 <= cal.spearman <= 1 and cal.voxels == int(res.mask.sum())
    before = float(
        error_mm(torch.zeros_like(res.mean_displacement), brain_pair.true_displacement, (2.0, 2.0))[
            res.mask
        ].mean()
    )
    assert cal.mean_error_mm < before, "the mean TTA field is closer to the truth than no registration"
    s = res.summary()
    assert s["n_members"] == 3 and s["estimator"] == "tta" and json.dumps(s)


def test_estimate_rejects_bad_arguments(brain_pair):
    with pytest.raises(ValueError, match="estimator"):
        estimate_uncertainty(brain_pair, "bootstrap")
    with pytest.raises(ValueError, match="members"):
        estimate_uncertainty(brain_pair, "tta", members=1)
    with pytest.raises(ValueError, match="prob_voxelmorph.*no_such_model.pt"):
        estimate_uncertainty(brain_pair, "sampling", members=2, checkpoint="no_such_model.pt")


def test_sampling_draws_distinct_fields_from_a_prob_voxelmorph_checkpoint(tmp_path, monkeypatch):
    """A tiny untrained prob_voxelmorph (log-variance head bias raised so samples differ) saved as a checkpoint:
    the sampling estimator returns K fields on the image grid whose spread is positive."""
    from regcore.methods.learned.family import get_family
    from regcore.train.checkpoint import save_checkpoint
    from regcore.uncertainty.sampling import sampling_samples, trained_checkpoints

    fam = get_family("prob_voxelmorph")
    config = fam.make_config({"widths": [4, 8], "int_steps": 4})
    nets = fam.build(2, config)
    with torch.no_grad():
        nets["net"].head.bias[2:] = -1.0
    ckpt = save_checkpoint(
        tmp_path / "runs" / "r1" / "model.pt",
        {
            "family": fam.name,
            "family_module": fam.module(),
            "dims": 2,
            "family_config": fam.config_dict(config),
            "spacing_mm": 2.0,
            "train_shape": [32, 32],
            "state_dict": {k: v.detach().cpu() for k, v in nets.state_dict().items()},
        },
    )
    rng = np.random.default_rng(0)
    fixed = Image.from_array(rng.random((30, 26)).astype(np.float32), spacing=2.0)
    moving = Image.from_array(rng.random((30, 26)).astype(np.float32), spacing=2.0)
    samples = sampling_samples(fixed, moving, checkpoint=str(ckpt), samples=4, device="cpu")
    assert samples.shape == (4, 1, 2, 30, 26) and torch.isfinite(samples).all()
    _, var = field_statistics(samples, fixed.spacing)
    assert float(var.mean()) > 0, "samples of a network with non-zero variance differ"
    (tmp_path / "runs" / "r1" / "config.json").write_text(
        '{"family": "prob_voxelmorph", "dims": 2}', encoding="utf-8"
    )
    monkeypatch.setenv("REGLAB_RUNS_DIR", str(tmp_path / "runs"))
    assert trained_checkpoints(2) == [str(ckpt)] and trained_checkpoints(3) == []


# -- CLI ----------------------------------------------------------------------------------------------------
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from regcore.cli import main

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    code = main(["uncertainty", "--fixed", str(bad), "--moving", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "broken.nii.gz" in err and len(err.splitlines()) == 1
    code = main(
        ["uncertainty", "--fixed", str(tmp_path / "missing.nii.gz"), "--moving", str(bad), "--out", "x"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--fixed" in err and "missing.nii.gz" in err and len(err.splitlines()) == 1


def test_cli_writes_the_maps(tmp_path, brain_pair):
    from regcore.cli import main
    from regcore.io import load_image, save_displacement, save_image

    paths = {}
    for name, img in (
        ("f", brain_pair.fixed),
        ("m", brain_pair.moving),
        ("fl", brain_pair.fixed_labels),
        ("ml", brain_pair.moving_labels),
    ):
        paths[name] = tmp_path / f"{name}.nii.gz"
        save_image(img, paths[name])
    truth = save_displacement(
        brain_pair.true_displacement, brain_pair.fixed.geometry, tmp_path / "truth.nii.gz"
    )
    out = tmp_path / "out"
    code = main(
        [
            "uncertainty",
            *("--fixed", str(paths["f"]), "--moving", str(paths["m"])),
            *("--fixed-labels", str(paths["fl"]), "--moving-labels", str(paths["ml"])),
            *("--true-displacement", str(truth)),
            *("--method", "sitk_demons", "--members", "2", "--quiet", "--out", str(out)),
        ]
    )
    assert code == 0
    var = load_image(out / "variance.nii.gz")
    assert var.shape == brain_pair.fixed.shape and var.geometry.same_grid(brain_pair.fixed.geometry)
    assert (out / "label_entropy.nii.gz").is_file()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_members"] == 2 and summary["variance_mm2_max"] >= 0
    assert -1 <= summary["spearman"] <= 1 and summary["calibration_voxels"] > 0
    rows = (out / "reliability.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("bin,") and len(rows) == 1 + len(summary["reliability"])
    maps = (out / "maps.csv").read_text(encoding="utf-8").splitlines()
    assert maps[0] == "i,j,variance_mm2,std_mm,label_entropy_bits,error_mm"
    assert len(maps) == 1 + brain_pair.fixed.data[0].numel()


# -- the Evaluate page -----------------------------------------------------------------------------------
def test_evaluate_page_uncertainty_section():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from pages import _nav as nav

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
        at.switch_page(nav.page("evaluate").path).run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.selectbox(key="unc_estimator").value == "ensemble"  # the estimator that ranks the error
        assert len(at.multiselect(key="unc_methods").value) == 2
        at.selectbox(key="unc_estimator").set_value("tta").run()
        at.selectbox(key="unc_method").set_value("sitk_demons")
        at.number_input(key="unc_members").set_value(2)
        at.button(key="unc_compute").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        (entry,) = at.session_state["uncertainty"].values()
        result = entry["result"]
        assert result.estimator == "tta" and len(result.members) == 2
        spearman = [m for m in at.metric if m.label.startswith("Spearman")]
        assert spearman and spearman[0].value == f"{result.calibration.spearman:.3f}"
        labels = {b.label for b in at.get("download_button")}
        assert {"Variance (NIfTI, mm²)", "Maps (CSV)", "Reliability (CSV)"} <= labels
        at.segmented_control(key="unc_map").set_value("variance").run()  # redraw from the cache
        assert not at.exception
        assert (
            at.session_state["uncertainty"][next(iter(at.session_state["uncertainty"]))]["result"] is result
        )
    finally:
        os.chdir(old)
