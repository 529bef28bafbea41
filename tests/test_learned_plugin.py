"""Proof of openness: a learned family defined HERE, outside regcore, works everywhere.

The toy family below is a two-layer CNN. Without touching any file under ``regcore/`` or
``pages/``, it is trained for a few steps through the job engine (a separate worker process),
registers a real pair through ``run_registration`` and through the CLI, and is listed by
``regcore methods --json`` (also in a fresh process that loads it from ``REGCORE_PLUGINS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch
from torch import nn

from regcore import cli
from regcore.config import param
from regcore.data import sample_pair
from regcore.methods.learned.family import LearnedFamily, LearnedSettings, Prediction, register_family
from regcore.register import run_registration
from regcore.train import jobs
from regcore.train.checkpoint import load_checkpoint


@dataclass(frozen=True)
class ToyConfig:
    width: int = param(8, "Channels of the hidden convolution.", range=(1, 64))


@register_family
class ToyCNN(LearnedFamily):
    name = "toy_cnn"
    title = "Toy CNN (test plug-in)"
    summary = (
        "Two convolutions predict a displacement; defined in a test module to prove the contract is open."
    )
    paper = "none"
    Config = ToyConfig
    Settings = LearnedSettings
    dims = (2,)

    def build(self, dims, config):
        net = nn.Sequential(
            nn.Conv2d(2, config.width, 5, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(config.width, 2, 5, padding=2),
        )
        nn.init.zeros_(net[2].weight)
        nn.init.zeros_(net[2].bias)
        return nn.ModuleDict({"net": net})

    def recipe(self, dims):
        return {"train_shape": (32, 32)}

    def predict(self, nets, moving, fixed, config, settings=None):
        return Prediction(displacement=nets["net"](torch.cat([moving, fixed], 1)))


TOY_RECIPE = {
    "family": "toy_cnn",
    "family_config": {"width": 6},
    "epochs": 2,
    "steps_per_epoch": 4,
    "batch_size": 2,
    "val_pairs": 2,
    "synthetic_pool": 4,
    "lr": 0.01,
    "device": "cpu",
    "threads": 1,
    "supervision": "unsupervised",
    "similarity": "mse",
}


@pytest.fixture(scope="module")
def trained_toy(tmp_path_factory) -> Path:
    """Train the toy family for 8 steps through the job engine (its own worker process)."""
    runs = tmp_path_factory.mktemp("runs")
    old = os.environ.get("REGLAB_RUNS_DIR")
    os.environ["REGLAB_RUNS_DIR"] = str(runs)
    try:
        run_id = jobs.start(TOY_RECIPE)
        deadline = time.time() + 120
        while jobs.status(run_id)["state"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.5)
        st = jobs.status(run_id)
        assert st["state"] == "finished", (
            st,
            (runs / run_id / "worker.log").read_text(encoding="utf-8")[-2000:],
        )
        steps = [r for r in jobs.metrics(run_id) if r["kind"] == "step"]
        assert len(steps) == 8
        return jobs.weights_path(run_id)
    finally:
        if old is None:
            os.environ.pop("REGLAB_RUNS_DIR", None)
        else:
            os.environ["REGLAB_RUNS_DIR"] = old


def test_toy_checkpoint_records_family_and_constructor_arguments(trained_toy):
    data = load_checkpoint(trained_toy)
    assert data["family"] == "toy_cnn" and data["family_config"] == {"width": 6}
    assert data["family_module"] == __name__
    assert data["state_dict"]["net.0.weight"].shape == (6, 2, 5, 5)


def _pair():
    return sample_pair("brain", 2, 3, 7, resolution_mm=2.0)


def test_toy_registers_through_run_registration(trained_toy):
    pair = _pair()
    result, metrics = run_registration(
        pair.fixed,
        pair.moving,
        "toy_cnn",
        {"checkpoint": str(trained_toy)},
        fixed_labels=pair.fixed_labels,
        moving_labels=pair.moving_labels,
    )
    assert result.method == "toy_cnn" and result.displacement.shape == (1, 2, *pair.fixed.shape)
    assert result.displacement.abs().max() > 0  # trained weights moved away from the zero init
    assert 0.0 <= metrics["dice_mean"] <= 1.0


def test_toy_registers_through_the_cli(trained_toy, tmp_path):
    from regcore.io import save_image

    pair = _pair()
    paths = {}
    for key in ("fixed", "moving"):
        paths[key] = tmp_path / f"{key}.nii.gz"
        save_image(getattr(pair, key), paths[key])
    out = tmp_path / "out"
    rc = cli.main(
        [
            "register",
            "--fixed",
            str(paths["fixed"]),
            "--moving",
            str(paths["moving"]),
            "--method",
            "toy_cnn",
            "--set",
            f"checkpoint={trained_toy}",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["method"] == "toy_cnn"
    assert (out / "displacement.nii.gz").is_file() or any(out.glob("displacement.*"))


def test_toy_is_listed_by_methods_json(capsys):
    assert cli.main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["toy_cnn"]["family"] == "learned"
    assert [p["name"] for p in listed["toy_cnn"]["parameters"]] == [f.name for f in fields(LearnedSettings)]


def test_a_fresh_process_loads_the_plugin_from_the_environment():
    here = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "REGCORE_PLUGINS": __name__,
        "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "regcore.cli", "methods", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "toy_cnn" in {m["name"] for m in json.loads(out.stdout)}
    bad = subprocess.run(
        [sys.executable, "-m", "regcore.cli", "methods"],
        capture_output=True,
        text=True,
        env={**env, "REGCORE_PLUGINS": "no_such_plugin_module"},
        timeout=120,
    )
    assert bad.returncode == 2 and "REGCORE_PLUGINS names module 'no_such_plugin_module'" in bad.stderr
    assert "Traceback" not in bad.stderr
