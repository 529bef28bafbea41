"""regcore.train: config, losses per supervision mode, loop (stop/resume), checkpoints, jobs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from regcore.methods.learned.family import StepContext, all_families, get_family
from regcore.train import jobs, run_training
from regcore.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from regcore.train.config import config_from_dict, config_to_dict, load_config, save_config
from regcore.train.datasets import PairSource, shapes_pair
from regcore.train.objectives import dice_per_pair, folding_percent, similarity_module, warped_label_dice_loss
from regcore.train.status import read_metrics

TINY = {
    "epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "train_shape": [32, 32],
    "val_pairs": 2,
    "synthetic_pool": 4,
    "device": "cpu",
    "threads": 1,
}


def _write(tmp_path, **over) -> str:
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({**TINY, **over}), encoding="utf-8")
    return str(p)


# -- config -------------------------------------------------------------------------------------


def test_config_round_trip_and_errors(tmp_path):
    c = config_from_dict(TINY)
    assert config_from_dict(config_to_dict(c)) == c
    save_config(c, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == c
    with pytest.raises(ValueError, match="unknown TrainConfig key 'epoch'"):
        config_from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="unknown learned family 'resnet'"):
        config_from_dict({"family": "resnet"})
    with pytest.raises(ValueError, match="'model' is now 'family'"):
        config_from_dict({"model": "voxelmorph"})
    with pytest.raises(ValueError, match=r"family_config: .*int_steps must be in"):
        config_from_dict({"family_config": {"int_steps": 50}})
    with pytest.raises(ValueError, match="unknown parameter 'widths'"):
        config_from_dict({"family_config": {"widths": [4]}})
    with pytest.raises(ValueError, match=r"lr must be in \[1e-06, 1.0\]"):
        config_from_dict({"lr": 5.0})
    with pytest.raises(ValueError, match="multiples of 32"):
        config_from_dict({"family": "transmorph", "train_shape": [48, 64]})
    with pytest.raises(ValueError, match="data_path is required"):
        config_from_dict({"data": "folder"})
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot parse config"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "recipe.yaml").write_text("lr: 0.001\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"recipe.yaml: a recipe is a .json or .toml file, got '.yaml'"):
        load_config(tmp_path / "recipe.yaml")


# -- data and losses ------------------------------------------------------------------------------


def test_shapes_pair_true_displacement_maps_moving_onto_fixed():
    """moving o (id + u_true) reproduces the fixed label map (the convention the losses rely on)."""
    from regcore.spatial.warp import warp_labels

    s = shapes_pair((48, 48), np.random.default_rng(3))
    warped = warp_labels(s["moving_labels"][None], s["true_displacement"][None])
    assert torch.equal(warped, s["fixed_labels"][None])
    assert s["true_displacement"].abs().max() > 1.0


def test_batches_depend_on_seed_and_step_only():
    src = PairSource(config_from_dict(TINY))
    a = src.batch(np.random.default_rng([0, 5]))
    b = PairSource(config_from_dict(TINY)).batch(np.random.default_rng([0, 5]))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deformed_self_pairs_carry_their_true_field():
    """deform_augment replaces real pairs by one image and a deformed copy: the copy is the image warped by the
    returned field (fixed -> moving, the losses' convention), the field stays under the bound, and 0 leaves the
    batches exactly as before."""
    from regcore.spatial.warp import warp, warp_labels
    from regcore.train.datasets import deformed_self_pair

    real = {**shapes_pair((48, 48), np.random.default_rng(5)), "has_true": torch.tensor(False)}
    s = deformed_self_pair(real, np.random.default_rng(2), max_displacement_vox=4.0)
    u = s["true_displacement"][None]
    assert torch.equal(s["fixed"][None], warp(s["moving"][None], u))
    assert torch.equal(s["fixed_labels"][None], warp_labels(s["moving_labels"][None], u))
    assert any(torch.equal(s["moving"], real[k]) for k in ("fixed", "moving")) and bool(s["has_true"])
    assert 0.5 < float(u.norm(dim=1).max()) < 4.0 + 48 / 32 * 1.5 + 48 * 0.1  # deformable + small affine
    src = PairSource(config_from_dict({**TINY, "deform_augment": 1.0}))
    src._real = [real]  # stands in for a real pair (no known field)
    batch = src.batch(np.random.default_rng([0, 1]))
    assert bool(batch["has_true"].all()) and float(batch["true_displacement"].abs().max()) > 0.5
    a, b = PairSource(config_from_dict(TINY)), PairSource(config_from_dict({**TINY, "deform_augment": 0.0}))
    a._real = b._real = [real]
    x, y = a.batch(np.random.default_rng([0, 1])), b.batch(np.random.default_rng([0, 1]))
    assert all(torch.equal(x[k], y[k]) for k in x) and not bool(x["has_true"].any())
    with pytest.raises(ValueError, match="deform_augment must be in"):
        config_from_dict({"deform_augment": 1.5})


def test_random_crops_keep_the_pair_and_its_field_in_register():
    """crop_shape: every value is cut at one window, so the cropped field still maps the cropped moving image
    onto the cropped fixed one (away from the crop border, where content comes from outside the window)."""
    from regcore.spatial.warp import warp
    from regcore.train.datasets import deformed_self_pair, random_crop

    real = {**shapes_pair((64, 64), np.random.default_rng(3)), "has_true": torch.tensor(False)}
    # a deformed copy: fixed = moving o (id + u) exactly
    s = deformed_self_pair(real, np.random.default_rng(2), max_displacement_vox=4.0)
    c = random_crop(s, (32, 48), np.random.default_rng(4))
    assert c["fixed"].shape == (1, 32, 48) and c["true_displacement"].shape == (2, 32, 48)
    assert c["fixed_labels"].shape == (1, 32, 48) and bool(c["has_true"])
    m = int(float(c["true_displacement"].abs().max())) + 2  # a margin the field cannot reach across
    inside = (slice(None), slice(None), slice(m, -m), slice(m, -m))
    assert torch.allclose(
        warp(c["moving"][None], c["true_displacement"][None])[inside], c["fixed"][None][inside], atol=1e-5
    )
    batch = PairSource(config_from_dict({**TINY, "train_shape": [32, 32], "crop_shape": [16, 32]})).batch(
        np.random.default_rng(0)
    )
    assert batch["fixed"].shape == (2, 1, 16, 32) and batch["true_displacement"].shape == (2, 2, 16, 32)
    with pytest.raises(ValueError, match="crop_shape must have 2 entries"):
        config_from_dict({**TINY, "crop_shape": [48, 16]})
    with pytest.raises(ValueError, match="not fully convolutional"):
        config_from_dict({**TINY, "family": "transmorph", "train_shape": [64, 64], "crop_shape": [32, 32]})


def test_augmentation_mirrors_3d_brains_left_right_only(monkeypatch):
    """3D pairs of known orientation are mirrored along their L/R axis only (never upside down or back to
    front); 2D and synthetic-shape data keep the shipped recipes' axes (all but the first)."""
    import regcore.train.datasets as datasets

    src = PairSource(config_from_dict({**TINY, "dims": 3, "train_shape": [16, 16, 16]}))
    assert src.orientation is None and src.mirror_axes == (1, 2)
    for codes, axes in (("LIA", (0,)), ("RAS", (0,)), ("ALS", (1,)), ("SPR", (2,))):
        src.orientation = codes
        assert src.mirror_axes == axes, codes
    flipped: list[int] = []
    monkeypatch.setattr(datasets, "flip_sample", lambda s, axis: flipped.append(axis) or s)
    src.orientation = "LIA"
    for step in range(20):
        src.batch(np.random.default_rng([0, step]))
    assert flipped and set(flipped) == {0}
    assert PairSource(config_from_dict(TINY)).mirror_axes == (1,)


def test_hard_dice_matches_monai():
    from monai.metrics import DiceMetric

    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, 4, (1, 1, 24, 24), generator=g)
    m = torch.randint(0, 4, (1, 1, 24, 24), generator=g)
    ours = dice_per_pair(f, m, torch.zeros(1, 2, 24, 24))
    oh = lambda x: torch.nn.functional.one_hot(x[:, 0], 4).movedim(-1, 1)  # noqa: E731
    ref = DiceMetric(include_background=False, reduction="mean")(oh(m), oh(f))
    assert torch.allclose(ours, ref.mean().float(), atol=1e-6)


def test_validation_dice_skips_unlabelled_pairs_without_warning():
    import warnings

    from regcore.train.loop import _mean_of_labelled

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would fail here
        assert np.isnan(_mean_of_labelled(torch.tensor([float("nan"), float("nan")])))
        assert _mean_of_labelled(torch.tensor([0.5, float("nan"), 0.7])) == pytest.approx(0.6)


def test_validation_summary_falls_back_to_the_loss_without_labels():
    from regcore.train.loop import validation_summary

    assert validation_summary({"val_dice": 0.7123, "val_loss": -0.2}) == "val Dice 0.712"
    assert validation_summary({"val_dice": float("nan"), "val_loss": -0.2878}) == "val loss -0.288"
    assert validation_summary({}) == "no validation yet"


def test_soft_dice_is_zero_loss_for_identical_labels():
    lab = torch.randint(1, 4, (1, 1, 16, 16))
    assert warped_label_dice_loss(lab, lab, torch.zeros(1, 2, 16, 16)) < 1e-5
    other = torch.where(lab == 1, 7, lab)  # any label values, e.g. 7 instead of 1
    assert warped_label_dice_loss(lab, other, torch.zeros(1, 2, 16, 16)) > 0.1


def test_folding_percent_counts_non_positive_jacobians():
    fold = torch.zeros(1, 2, 8, 8)
    fold[0, 0] = -2.0 * torch.arange(8.0).view(8, 1)  # x -> -x along axis 0: det = -1
    assert folding_percent(fold) == 100.0
    assert folding_percent(torch.zeros(1, 2, 8, 8)) == 0.0


def _context(cfg):
    return StepContext(
        config=cfg, family_config=cfg.family_config, similarity=similarity_module(cfg.similarity, 2)
    )


TRAINABLE = [f.name for f in all_families() if f.needs_training and 2 in f.dims]
MODES = {
    "weakly supervised": "weak",
    "fully supervised": "full",
    "dual": "dual",
    "unsupervised": "unsupervised",
}
# Every supervision mode through the default family; every family with its own mode and unsupervised.
CASES = sorted(
    {("voxelmorph", m) for m in MODES.values()}
    | {(f, "unsupervised") for f in TRAINABLE}
    | {(f, MODES[str(get_family(f).supervision)]) for f in TRAINABLE}
)


@pytest.mark.parametrize("family,supervision", CASES)
def test_a_few_steps_lower_the_loss(family, supervision):
    """Every trainable family's own train_step lowers its loss on a fixed batch (each supervision mode)."""
    fam = get_family(family)
    shape = [64, 64] if fam.divisor(2, fam.make_config({})) >= 16 and family != "voxelmorph" else [32, 32]
    cfg = config_from_dict(
        {
            **TINY,
            "family": family,
            "supervision": supervision,
            "lr": 3e-3,
            "train_shape": shape,
            "intensity_augment": False,
            "augment": False,
            "regularizer_weight": 0.1,
            "field_weight": 0.1,
        }
    )
    torch.manual_seed(0)
    nets = fam.build(2, cfg.family_config)
    opts = fam.optimizers(nets, cfg.lr)
    batch = PairSource(cfg).batch(np.random.default_rng(1), 2)
    ctx = _context(cfg)
    losses = [fam.train_step(nets, opts, batch, ctx)["total"] for _ in range(8)]
    with torch.no_grad():
        final = float(fam.losses(nets, batch, ctx)["total"])
    assert min(losses[-3:] + [final]) < losses[0] - 1e-4, losses + [final]


def test_full_supervision_without_true_fields_is_a_clear_error():
    cfg = config_from_dict({**TINY, "supervision": "full"})
    batch = PairSource(cfg).batch(np.random.default_rng(1), 2)
    batch["has_true"][:] = False
    fam = cfg.learned_family()
    with pytest.raises(ValueError, match="needs ground-truth displacements"):
        fam.losses(fam.build(2, cfg.family_config), batch, _context(cfg))


def test_dual_supervision_uses_the_field_only_where_it_is_known():
    """dual: a batch of real pairs (no field) trains on the similarity alone; a known field adds its error."""
    cfg = config_from_dict({**TINY, "supervision": "dual"})
    batch = PairSource(cfg).batch(np.random.default_rng(1), 2)
    fam = cfg.learned_family()
    nets = fam.build(2, cfg.family_config)
    batch["has_true"][:] = False
    unknown = fam.losses(nets, batch, _context(cfg))
    assert float(unknown["field"]) == 0.0
    assert torch.isclose(unknown["total"], unknown["similarity"] + unknown["regularizer"])
    batch["has_true"][0] = True
    batch["true_displacement"][0] = 3.0  # far from the untrained net's near-zero field
    known = fam.losses(nets, batch, _context(cfg))
    assert float(known["field"].detach()) > 8.0
    assert torch.isclose(known["total"] - unknown["total"], cfg.field_weight * known["field"], rtol=1e-4)


# -- loop, stop/resume, checkpoints ----------------------------------------------------------------


def test_run_writes_status_metrics_checkpoint_and_previews(tmp_path):
    out = tmp_path / "run"
    final = run_training(_write(tmp_path), out)
    status = json.loads((out / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "finished" and status["step"] == 4
    recs = read_metrics(out)
    steps = [r for r in recs if r["kind"] == "step"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert len(steps) == 4 and {"similarity", "regularizer", "total", "time_s"} <= set(steps[0])
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and 0 <= epochs[-1]["val_dice"] <= 1
    assert len(list((out / "previews").glob("epoch_*.png"))) == 2
    data = load_checkpoint(final)
    assert data["family"] == "voxelmorph" and "optimizers" not in data
    nets = get_family("voxelmorph").build(2, get_family("voxelmorph").make_config(data["family_config"]))
    nets.load_state_dict(data["state_dict"])  # family + constructor arguments rebuild the weights


def test_stop_and_resume_gives_identical_weights(tmp_path, monkeypatch):
    import regcore.train.loop as loop

    cfg = _write(tmp_path, epochs=2, steps_per_epoch=3)
    ref = run_training(cfg, tmp_path / "ref")

    real_append = loop.append_metrics

    def stop_after_step_2(run_dir, record):  # deterministic "user pressed stop" after step 2
        real_append(run_dir, record)
        if record.get("kind") == "step" and record["step"] == 2:
            (run_dir / "STOP").touch()

    monkeypatch.setattr(loop, "append_metrics", stop_after_step_2)
    out = tmp_path / "interrupted"
    run_training(cfg, out)
    assert json.loads((out / "status.json").read_text(encoding="utf-8"))["state"] == "stopped"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
    monkeypatch.setattr(loop, "append_metrics", real_append)
    final = run_training(out / "config.json", out, resume=True)
    a, b = load_checkpoint(ref)["state_dict"], load_checkpoint(final)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(bad)
    good = save_checkpoint(
        tmp_path / "good.pt", {"family": "affine_net", "dims": 2, "state_dict": {}, "spacing_mm": 2.0}
    )
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(truncated)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a RegLab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="corrupt"):
        run_training(_write(tmp_path, init_checkpoint=str(bad)), tmp_path / "r")
    assert json.loads((tmp_path / "r" / "status.json").read_text(encoding="utf-8"))["state"] == "failed"


def test_resume_without_checkpoint_fails_cleanly(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        run_training(_write(tmp_path), tmp_path / "fresh", resume=True)


# -- jobs (separate process) --------------------------------------------------------------------


def test_job_runs_in_background_process(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_RUNS_DIR", str(tmp_path / "runs"))
    run_id = jobs.start({**TINY, "epochs": 1})
    assert jobs.status(run_id)["state"] in ("queued", "running", "finished")
    deadline = time.time() + 120
    while jobs.status(run_id)["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
    st = jobs.status(run_id)
    assert st["state"] == "finished", (
        st,
        (tmp_path / "runs" / run_id / "worker.log").read_text(encoding="utf-8")[-2000:],
    )
    assert any(r["kind"] == "step" for r in jobs.metrics(run_id))
    assert jobs.weights_path(run_id).name == "model.pt"
    assert [r["run_id"] for r in jobs.list_runs()] == [run_id]
    with pytest.raises(ValueError, match="unknown run"):
        jobs.status("no-such-run")
    with pytest.raises(ValueError, match="plain folder name"):
        jobs.status("../etc")


def test_dead_worker_reads_as_failed(tmp_path, monkeypatch):
    from regcore.train.status import write_status

    monkeypatch.setenv("REGLAB_RUNS_DIR", str(tmp_path))
    d = tmp_path / "r1"
    d.mkdir()
    save_config(config_from_dict(TINY), d / "config.json")
    write_status(d, state="running", pid=2**22 + 12345)  # no such process
    st = jobs.status("r1")
    assert st["state"] == "failed" and "ended unexpectedly" in st["message"]


def test_a_worker_started_here_is_alive_before_it_runs_regcore(tmp_path, monkeypatch):
    """Between fork and exec the child's command line is still the parent's (no "regcore" in it): a child
    this process started and that has not exited must not read as dead (it did, under load)."""
    import subprocess

    from regcore.train.status import write_status

    monkeypatch.setenv("REGLAB_RUNS_DIR", str(tmp_path))
    d = tmp_path / "r2"
    d.mkdir()
    save_config(config_from_dict(TINY), d / "config.json")
    child = subprocess.Popen(["sleep", "30"])  # alive, and its command line does not name regcore
    try:
        write_status(d, state="queued", pid=child.pid, message="starting worker")
        monkeypatch.setitem(jobs._PROCS, "r2", child)
        assert jobs.status("r2")["state"] == "queued"
    finally:
        child.kill()
        child.wait()
    assert jobs.status("r2")["state"] == "failed", "once it has exited without a word, it is failed"
