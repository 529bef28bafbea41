"""Multi-atlas segmentation: fusion analytic cases, SimpleITK cross-checks, the learned fusion, a short real
leave-one-out on sample subjects, the CLI and the page."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from regcore.image import Image
from regcore.segment.fusion import (
    locally_weighted_vote,
    majority_vote,
    staple,
    weighted_vote,
)

ROOT = Path(__file__).resolve().parents[1]
FAST_DEMONS = {"iterations": 10, "levels": 2}


def _noisy_copies(truth: np.ndarray, rates, seed: int = 0, values=(0, 1, 2, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for r in rates:
        flip = rng.random(truth.shape) < r
        out.append(np.where(flip, rng.choice(values, truth.shape), truth))
    return out


# -- majority --------------------------------------------------------------------------------------
def test_majority_picks_the_two_atlases_that_agree():
    a = np.zeros((6, 7), np.int64)
    a[1:4, 2:5] = 5
    b = a.copy()
    c = np.full_like(a, 9)
    res = majority_vote([c, a, b])
    np.testing.assert_array_equal(res.labels, a)
    expected = np.where(a == 9, 1.0, 2 / 3)  # c agrees nowhere with a and b
    np.testing.assert_allclose(res.agreement, expected, rtol=1e-6)


def test_majority_matches_simpleitk_label_voting_where_there_is_no_tie():
    sitk = pytest.importorskip("SimpleITK")
    truth = np.random.default_rng(1).integers(0, 4, (30, 40))
    maps = _noisy_copies(truth, (0.2, 0.3, 0.4, 0.3, 0.5), seed=2)
    ours = majority_vote(maps).labels
    f = sitk.LabelVotingImageFilter()
    f.SetLabelForUndecidedPixels(255)
    theirs = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in maps]))
    decided = theirs != 255
    assert decided.mean() > 0.8
    np.testing.assert_array_equal(ours[decided], theirs[decided])


def test_fusion_is_the_same_for_huge_label_values():
    truth = np.random.default_rng(3).integers(0, 3, (20, 20))
    maps = _noisy_copies(truth, (0.1, 0.3, 0.5), seed=4, values=(0, 1, 2))
    big = [np.array([0, 7, 2**40])[m] for m in maps]  # compacted: memory does not grow with the values
    for fuse in (majority_vote, staple):
        small_res, big_res = fuse(maps), fuse(big)
        np.testing.assert_array_equal(np.array([0, 7, 2**40])[small_res.labels], big_res.labels)
        np.testing.assert_allclose(small_res.agreement, big_res.agreement, rtol=1e-5)


# -- STAPLE -----------------------------------------------------------------------------------------
def test_staple_matches_simpleitk_and_trusts_the_better_atlas():
    sitk = pytest.importorskip("SimpleITK")
    truth = np.random.default_rng(5).integers(0, 3, (40, 40))
    maps = _noisy_copies(truth, (0.05, 0.5, 0.6), seed=6, values=(0, 1, 2))
    res = staple(maps)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    theirs = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in maps]))
    decided = theirs != 255
    np.testing.assert_array_equal(res.labels[decided], theirs[decided])
    assert res.agreement.min() >= 0.0 and res.agreement.max() <= 1.0 + 1e-6
    # the two bad atlases out-vote the good one under majority, STAPLE learns whom to trust
    assert (res.labels == truth).mean() > (majority_vote(maps).labels == truth).mean() + 0.05
    everyone = (maps[0] == maps[1]) & (maps[1] == maps[2])
    assert res.agreement[everyone].mean() > res.agreement[~everyone].mean()


# -- weighted voting ---------------------------------------------------------------------------------
def _weighted_case():
    rng = np.random.default_rng(7)
    from scipy.ndimage import gaussian_filter

    target = gaussian_filter(rng.standard_normal((40, 40)), 2).astype(np.float32)
    truth = (target > 0).astype(np.int64)
    region = np.zeros_like(truth, bool)
    region[10:30, 10:30] = True
    good_img, good_lab = target.copy(), truth.copy()
    bad_imgs, bad_labs = [], []
    for k in range(2):
        img = target.copy()
        img[region] = gaussian_filter(rng.standard_normal((40, 40)), 2)[region] * 3  # looks different there
        lab = truth.copy()
        lab[region] = 2  # and carries a wrong label there
        bad_imgs.append(img.astype(np.float32))
        bad_labs.append(lab)
    return target, truth, region, [good_img, *bad_imgs], [good_lab, *bad_labs]


@pytest.mark.parametrize("joint", [False, True])
def test_weighted_voting_prefers_the_atlas_whose_image_matches(joint):
    target, truth, region, images, labels = _weighted_case()
    assert (majority_vote(labels).labels[region] == 2).all()  # majority follows the two wrong atlases
    res = locally_weighted_vote(target, images, labels, sigma=1.5, joint=joint)
    inner = np.zeros_like(region)
    inner[13:27, 13:27] = True  # away from the region's edge, where the window mixes both sides
    assert (res.labels[inner] == truth[inner]).mean() > 0.95
    assert res.weights is not None and res.weights.shape == (3, 40, 40)
    np.testing.assert_allclose(res.weights.sum(axis=0), 1.0, atol=1e-4)


def test_weighted_vote_and_inputs_are_validated():
    maps = [np.zeros((4, 4), np.int64)] * 2
    with pytest.raises(ValueError, match="weights must have shape"):
        weighted_vote(maps, np.ones((3, 4, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_vote(maps, -np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match=r"label_maps\[1\] has shape"):
        majority_vote([np.zeros((4, 4), np.int64), np.zeros((4, 5), np.int64)])
    with pytest.raises(ValueError, match="at least one"):
        staple([])
    with pytest.raises(ValueError, match="non-integer"):
        majority_vote([np.full((3, 3), 0.5)])
    with pytest.raises(ValueError, match=r"atlas_images\[0\] has shape"):
        locally_weighted_vote(np.zeros((4, 4)), [np.zeros((5, 4))], [np.zeros((4, 4), np.int64)])


# -- learned fusion ----------------------------------------------------------------------------------
def test_votenet_learns_to_trust_atlases_whose_image_matches():
    from regcore.segment.learned_fusion import VoteNet, make_examples, train_votenet

    target, truth, region, images, labels = _weighted_case()
    examples = make_examples(target, truth, images, labels)
    model = train_votenet(examples, steps=80, crop=32, batch_size=3, seed=0)
    assert len(model.history) == 80 and np.isfinite(model.history).all()
    assert np.mean(model.history[-10:]) < np.mean(model.history[:10])
    p = model.weights(target, images, labels)
    assert p.shape == (3, 40, 40) and p.min() >= 0 and p.max() <= 1
    inner = np.zeros_like(region)
    inner[13:27, 13:27] = True
    assert p[0][inner].mean() > p[1][inner].mean() + 0.1  # the matching atlas is trusted more
    res = model.fuse(target, images, labels)
    assert res.labels.shape == truth.shape and res.method == "learned"
    assert VoteNet(3, 4)(torch.zeros(1, 7, 8, 8, 8)).shape == (1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="at least one VoteExample"):
        train_votenet([])


# -- real leave-one-out on sample subjects -------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_subjects():
    from regcore.data import sample_pair

    out = []
    for k in range(4):
        p = sample_pair("brain", 2, k, k)
        out.append((p.meta["fixed_subject"], p.fixed, p.fixed_labels))
    return out


def test_segment_leave_one_out_on_sample_subjects(sample_subjects):
    from regcore.segment.multi_atlas import Atlas, fuse_all, segment

    (tid, target, truth), *others = sample_subjects
    atlases = [Atlas(n, img, lab) for n, img, lab in others]
    notes = []
    res = segment(
        target,
        atlases,
        "demons",
        "weighted",
        "serial",
        target_labels=truth,
        overrides=FAST_DEMONS,
        progress=lambda f, m: notes.append(f),
    )
    assert res.labels.is_labels and res.labels.geometry.same_grid(target.geometry)
    agreement = res.agreement.data[0].numpy()
    assert agreement.min() >= 0 and agreement.max() <= 1 + 1e-6
    singles = [v for v in res.atlas_dice.values() if v is not None]
    assert len(singles) == 3 and res.dice_mean > np.mean(singles), (res.dice_mean, singles)
    assert notes and notes[-1] == 1.0 and all(a <= b + 1e-9 for a, b in zip(notes, notes[1:]))
    rows = res.dice_rows()
    assert rows[-1]["structure"] == "mean" and "best single atlas" in rows[-1]
    everything = fuse_all(target, res.warped, ["majority", "staple"], target_labels=truth)
    assert set(everything) == {"majority", "staple"} and all(d for _, d in everything.values())


def test_segment_rejects_bad_arguments(sample_subjects):
    from regcore.segment.multi_atlas import Atlas, segment

    (_, target, truth), (n, img, lab), *_ = sample_subjects
    with pytest.raises(ValueError, match="fusion must be one of"):
        segment(target, [Atlas(n, img, lab)], fusion="nope")
    with pytest.raises(ValueError, match="at least one labelled atlas"):
        segment(target, [])
    with pytest.raises(TypeError, match="labels must be a label Image"):
        Atlas("x", img, img)
    with pytest.raises(ValueError, match="nope"):
        segment(target, [Atlas(n, img, lab)], method="nope")


# -- CLI ---------------------------------------------------------------------------------------------
@pytest.fixture
def cli_main(monkeypatch):
    """``regcore.cli.main`` with only this command registered (other features' modules may be in progress)."""
    from regcore import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", {"segment": cli.COMMAND_MODULES["segment"]})
    return cli.main


def _atlas_folder(tmp_path: Path, n: int) -> tuple[Path, Path, Path]:
    from regcore.data.samples import ensure_unit

    unit = ensure_unit("brain", 2, 2.0, None)
    folder = tmp_path / "atlases"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for k in range(1, n + 1):
        shutil.copy(unit / "images" / f"subject_0{k}_t1.nii.gz", folder / "images" / f"s0{k}.nii.gz")
        shutil.copy(unit / "labels" / f"subject_0{k}_seg.nii.gz", folder / "labels" / f"s0{k}_seg.nii.gz")
    shutil.copy(unit / "label_names.csv", folder / "label_names.csv")
    return folder, unit / "images" / "subject_00_t1.nii.gz", unit / "labels" / "subject_00_seg.nii.gz"


def test_cli_segment_writes_fused_labels_agreement_and_dice(tmp_path, cli_main, capsys):
    folder, target, labels = _atlas_folder(tmp_path, 2)
    out = tmp_path / "out"
    argv = ["segment", "--target", str(target), "--atlases", str(folder), "--target-labels", str(labels)]
    argv += ["--fusion", "majority", "--set", "iterations=10", "--set", "levels=2", "--out", str(out)]
    assert cli_main(argv) == 0, capsys.readouterr().err
    from regcore.io import load_image

    fused = load_image(out / "fused_labels.nii.gz", is_labels=True)
    agreement = load_image(out / "agreement.nii.gz")
    assert fused.shape == agreement.shape == load_image(target).shape
    rows = list(csv.DictReader(open(out / "dice.csv", encoding="utf-8")))
    assert rows[-1]["structure"] == "mean" and 0.5 < float(rows[-1]["majority"]) <= 1.0
    assert {"best single atlas", "mean single atlas"} <= set(rows[0])


def test_cli_segment_bad_inputs_exit_2_with_one_line(tmp_path, cli_main, capsys):
    folder, target, labels = _atlas_folder(tmp_path, 1)
    out = str(tmp_path / "out")
    cases = [
        (["--target", str(tmp_path / "missing.nii.gz"), "--atlases", str(folder)], "missing.nii.gz"),
        (["--target", str(target), "--atlases", str(tmp_path / "nowhere")], "nowhere"),
        (["--target", str(target), "--atlases", str(folder), "--method", "nope"], "nope"),
        (["--target", str(target), "--atlases", str(folder), "--set", "iterations=-3"], "iterations"),
        (["--target", str(target), "--atlases", str(folder), "--set", "oops"], "oops"),
        (
            ["--target", str(target), "--atlases", str(folder), "--target-labels", str(tmp_path / "x.nii")],
            "x.nii",
        ),
    ]
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    shutil.copy(target, empty / "images" / "only.nii.gz")  # an image without labels
    cases.append((["--target", str(target), "--atlases", str(empty)], "no labelled atlas"))
    for args, needle in cases:
        assert cli_main(["segment", *args, "--out", out]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, (args, err)
    with pytest.raises(SystemExit) as exc:
        cli_main(
            ["segment", "--target", str(target), "--atlases", str(folder), "--fusion", "nope", "--out", out]
        )
    assert exc.value.code == 2


# -- page --------------------------------------------------------------------------------------------
@pytest.mark.slow  # ~60 s on a loaded 2-core machine (app start with Home's sample run + 2 registrations)
def test_segment_page_runs_and_shows_the_map_and_dice_table():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from pages import _nav as nav

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
        at.switch_page(nav.page("segment").path).run()
        assert not at.exception and not at.error, [e.value for e in at.exception] + [
            e.value for e in at.error
        ]
        assert at.title[0].value == "Multi-atlas segmentation"
        at.slider(key="seg_n").set_value(2).run()
        at.button(key="seg_run").click().run()
        assert not at.exception and not at.error, [e.value for e in at.exception] + [
            e.value for e in at.error
        ]
        res = at.session_state["segment_result"]
        assert (
            set(res["fused"]) == {"majority", "staple", "weighted"} and res["rows"][-1]["structure"] == "mean"
        )
        assert at.get("plotly_chart") and at.dataframe
        assert any("vs best single atlas" in str(m.proto) for m in at.metric)
    finally:
        os.chdir(old)


def test_atlas_must_match_its_labels():
    from regcore.segment.multi_atlas import Atlas

    img = Image.from_array(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="differs from image shape"):
        Atlas("a", img, Image.from_array(np.zeros((4, 5), np.int64), is_labels=True))
