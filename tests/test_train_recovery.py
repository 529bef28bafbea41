"""Nothing lost in training: kill -9 then resume, NaN/inf losses, an app restart lists every run."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from regcore.methods.learned.family import LearnedFamily, NonFiniteLoss
from regcore.train import jobs, run_training
from regcore.train.checkpoint import load_checkpoint
from regcore.train.recovery import require_finite, truncate_metrics
from regcore.train.status import read_metrics, read_status

RECIPE = {
    "family": "voxelmorph",
    "dims": 2,
    "data": "shapes",
    "train_shape": [64, 64],
    "epochs": 2,
    "steps_per_epoch": 10,
    "batch_size": 4,
    "val_pairs": 1,
    "synthetic_pool": 4,
    "augment": False,
    "intensity_augment": False,
    "device": "cpu",
    "threads": 1,
    "seed": 3,
}


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _wait(cond, timeout: float, what: str, run_dir: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    log = (
        (run_dir / "worker.log").read_text(encoding="utf-8")[-2000:]
        if (run_dir / "worker.log").is_file()
        else ""
    )
    raise AssertionError(f"timed out waiting for {what}; status {read_status(run_dir)}\n{log}")


def _steps(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["total"] for r in read_metrics(run_dir) if r.get("kind") == "step"}


@pytest.mark.slow  # ~35 s: a worker process, a kill and a resume
def test_kill_9_mid_epoch_then_resume_continues_epoch_and_loss_from_the_checkpoint(runs_dir):
    run_id = jobs.start(RECIPE)
    run = runs_dir / run_id
    spe = RECIPE["steps_per_epoch"]

    def mid_epoch_2() -> bool:  # epoch 1's checkpoint is written and epoch 2 is under way
        ckpt = run / "checkpoints" / "last.pt"
        return ckpt.is_file() and max(_steps(run), default=0) >= spe + 3

    _wait(mid_epoch_2, 240, "epoch 2 to start", run)
    pid = read_status(run)["pid"]
    os.kill(pid, signal.SIGKILL)  # no warning, no checkpoint, no status update
    _wait(lambda: jobs.status(run_id)["state"] == "failed", 30, "the kill to be noticed", run)
    st = jobs.status(run_id)
    assert "ended unexpectedly" in st["message"]
    before = _steps(run)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == spe  # at most one epoch lost
    killed_at = max(before)
    assert killed_at > spe, "the kill happened mid-epoch 2"

    jobs.resume(run_id)
    _wait(
        lambda: jobs.status(run_id)["state"] in ("finished", "failed"), 300, "the resumed run to finish", run
    )
    assert jobs.status(run_id)["state"] == "finished", jobs.status(run_id)
    recs = read_metrics(run)
    resume = [r for r in recs if r.get("kind") == "resume"]
    assert resume and resume[0]["step"] == spe and resume[0]["dropped_records"] >= killed_at - spe
    steps = [r["step"] for r in recs if r.get("kind") == "step"]
    assert steps == list(range(1, RECIPE["epochs"] * spe + 1)), (
        "each step once: the curve continues, no repeats"
    )
    epochs = [r["epoch"] for r in recs if r.get("kind") == "epoch"]
    assert epochs == [0, 1, 2], "epoch counter continues from the checkpoint (1 -> 2)"
    after = _steps(run)
    for step in range(spe + 1, killed_at + 1):  # redone steps: same batches, same weights, same loss
        assert after[step] == pytest.approx(before[step], rel=1e-4, abs=1e-6), step
    assert all(math.isfinite(after[s]) for s in after)


def _nan_after(step: int, monkeypatch):
    real = LearnedFamily.losses

    def losses(self, nets, batch, ctx):
        terms = real(self, nets, batch, ctx)
        if ctx.step >= step:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(LearnedFamily, "losses", losses)


def test_nan_loss_stops_with_a_clear_status_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps({**RECIPE, "train_shape": [32, 32], "steps_per_epoch": 3, "batch_size": 2}),
        encoding="utf-8",
    )
    out = tmp_path / "run"  # 2 epochs of 3 steps
    _nan_after(4, monkeypatch)  # step 5 (epoch 2) produces NaN
    with pytest.raises(NonFiniteLoss, match="training loss became nan at step 5"):
        run_training(cfg, out)
    st = read_status(out)
    assert st["state"] == "failed"
    assert st["message"].startswith("stopped: training loss became nan at step 5")
    assert "last good checkpoint (epoch 1) is kept in checkpoints/last.pt" in st["message"]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    monkeypatch.undo()
    run_training(out / "config.json", out, resume=True)  # fixed (lower lr / weights): resume finishes
    assert read_status(out)["state"] == "finished"


def test_inf_loss_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps({**RECIPE, "train_shape": [32, 32], "steps_per_epoch": 3, "batch_size": 2}),
        encoding="utf-8",
    )
    _nan_after(0, monkeypatch)
    with pytest.raises(NonFiniteLoss):
        run_training(cfg, tmp_path / "run")
    msg = read_status(tmp_path / "run")["message"]
    assert "no epoch had finished" in msg and not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_non_finite_weights_are_never_checkpointed():
    net = torch.nn.Linear(2, 2)
    require_finite(net, 3)
    with torch.no_grad():
        net.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLoss, match="weight weight became NaN or infinite by step 7"):
        require_finite(net, 7)


def test_truncate_metrics_keeps_records_up_to_the_checkpoint(tmp_path):
    lines = [{"kind": "step", "step": s, "total": 1.0} for s in range(1, 8)] + [
        {"kind": "epoch", "epoch": 1, "step": 3}
    ]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "st', encoding="utf-8"
    )
    assert truncate_metrics(tmp_path, 3) == 4
    kept = read_metrics(tmp_path)
    assert [r.get("step") for r in kept] == [1, 2, 3, 3, 3] and kept[-1]["kind"] == "resume"


def test_an_app_restart_lists_every_earlier_training_run(runs_dir):
    """Runs in every state, plus damaged status/config files, all listed by a fresh process's Train page."""
    from streamlit.testing.v1 import AppTest

    states = {
        "finished": "val Dice 0.5",
        "stopped": "stopped at step 3",
        "failed": "stopped: loss became nan",
        "running": "epoch 1/3",
    }
    made = []
    for k, (state, msg) in enumerate(states.items()):
        d = runs_dir / f"2026010{k}-000000-voxelmorph2d-{state}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(RECIPE), encoding="utf-8")
        (d / "status.json").write_text(
            json.dumps({"state": state, "message": msg, "pid": 999999999, "step": 3, "total_steps": 20}),
            encoding="utf-8",
        )
        made.append(d.name)
    damaged = runs_dir / "20260109-000000-damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text("[not a config", encoding="utf-8")
    (damaged / "status.json").write_text('["not", "a", "status"]', encoding="utf-8")
    made.append(damaged.name)
    jobs._PROCS.clear()  # a new server process has no child handles
    listed = {r["run_id"]: r for r in jobs.list_runs()}
    assert set(made) <= set(listed)
    assert listed[made[3]]["state"] == "failed", "a 'running' run whose process is gone reads as failed"
    assert listed[damaged.name]["config"] == {}
    at = AppTest.from_file(
        str(Path(__file__).resolve().parents[1] / "pages" / "train.py"), default_timeout=60
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert set(made) <= set(table["Run"]), table["Run"].tolist()
