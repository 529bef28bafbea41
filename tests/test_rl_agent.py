"""RL registration agent (regcore.methods.learned.rl_agent): exact action values, training, shipped weights."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from regcore.image import Image
from regcore.methods import registry
from regcore.methods.learned.family import StepContext, get_family
from regcore.methods.learned.rl_agent import (
    action_matrices,
    action_table,
    action_values,
    distance_points,
    transform_distance,
)
from regcore.spatial.affine import affine_to_displacement, invert_affine, rigid_matrix
from regcore.spatial.warp import warp, warp_labels
from regcore.train.config import TrainConfig
from regcore.train.objectives import dice_per_pair

SHAPE = (64, 64)


def _family():
    fam = get_family("rl_agent")
    return fam, fam.make_config({})


def _translation(t0: float, t1: float, shape=SHAPE) -> torch.Tensor:
    return rigid_matrix(torch.zeros(1, 1), torch.tensor([[t0, t1]]), shape)


def _blob_image(shape=SHAPE) -> torch.Tensor:
    """An asymmetric smooth test image ``(1, 1, *shape)`` in [0, 1]."""
    y, x = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    img = torch.exp(-((y + 0.2) ** 2 / 0.15 + (x - 0.1) ** 2 / 0.05)) + 0.6 * torch.exp(
        -((y - 0.4) ** 2 + (x + 0.35) ** 2) / 0.02
    )
    return (img / img.max())[None, None]


def test_action_values_pure_translation_are_exact():
    """Residual = shift (3, 0): the best action is the coarse -t0 (removes 2 of 3 voxels), values are |t| - |t + d|."""
    _, cfg = _family()
    table = action_table(cfg)
    acts, pts = action_matrices(cfg, SHAPE), distance_points(SHAPE)
    q = action_values(_translation(3.0, 0.0), acts, pts)[0]
    assert table[int(q.argmax())][0] == "-t0 4 vox"
    for i, (_, _, angle, (d0, d1)) in enumerate(table):
        if angle == 0.0:
            expected = 3.0 - math.hypot(3.0 + d0, d1)
            assert float(q[i]) == pytest.approx(expected, abs=1e-4)
        else:
            assert float(q[i]) < 0  # any rotation only adds misalignment to a pure shift
    # small residual: the fine step wins over the overshooting medium one
    q = action_values(_translation(0.0, -0.6), acts, pts)[0]
    assert table[int(q.argmax())][0] == "+t1 0.25 vox"
    assert float(q.max()) == pytest.approx(0.25, abs=1e-4)


def test_best_action_brings_images_together():
    """The target's sign convention matches the images: applying the best action to a shifted copy makes it
    closer (MSE) to the fixed image than applying the opposite action."""
    _, cfg = _family()
    fixed = _blob_image()
    residual = _translation(0.0, 5.0)
    acts = action_matrices(cfg, SHAPE)
    q = action_values(residual, acts, distance_points(SHAPE))[0]
    best = int(q.argmax())
    opposite = best + 3  # table order per scale: +t0, +t1, +rot, -t0, -t1, -rot

    def warped_by(m):
        return warp(fixed, affine_to_displacement(m, SHAPE), padding_mode="zeros")

    from regcore.spatial.affine import compose_affine

    mse = [
        float((warped_by(compose_affine(residual, acts[i : i + 1])) - fixed).pow(2).mean())
        for i in (best, opposite)
    ]
    assert mse[0] < 0.5 * mse[1]
    assert transform_distance(residual, distance_points(SHAPE)).item() == pytest.approx(5.0, abs=1e-4)


def test_short_training_lowers_the_value_loss():
    fam, cfg = _family()
    cfg = fam.make_config({"states_per_image": 8})
    torch.manual_seed(0)
    nets = fam.build(2, cfg)
    tc = TrainConfig(family="rl_agent", train_shape=SHAPE, family_config=cfg)
    ctx = StepContext(config=tc, family_config=cfg, similarity=None)
    batch = {"fixed": _blob_image().repeat(2, 1, 1, 1)}
    opts = fam.optimizers(nets, 2e-3)

    def val_loss() -> float:
        nets.eval()
        with torch.no_grad():
            v = float(fam.losses(nets, batch, ctx)["value_mse"])
        nets.train()
        return v

    before = val_loss()
    for step in range(60):
        ctx.step = step
        terms = fam.train_step(nets, opts, batch, ctx)
        assert math.isfinite(terms["total"])
    after = val_loss()
    assert after < 0.5 * before, (before, after)


def test_episode_extras_and_bad_input():
    fam, cfg = _family()
    nets = fam.build(2, cfg).eval()
    fixed = _blob_image()
    moving = warp(fixed, affine_to_displacement(_translation(2.0, -3.0), SHAPE))
    settings = registry.get("rl_agent").make_config({"max_steps": 5})
    with torch.no_grad():
        pred = fam.predict(nets, moving, fixed, cfg, settings)
    ep = pred.extras["episode"]
    assert ep[0]["action"] == "start" and ep[-1]["action"] == "stop" and len(ep) <= 5 + 2
    for e in ep:
        assert set(e) == {"action", "reward", "score", "affine"} and tuple(e["affine"].shape) == (2, 3)
    assert tuple(pred.affine.shape) == (1, 2, 3) and tuple(pred.displacement.shape) == (1, 2, *SHAPE)
    with pytest.raises(ValueError, match="moving"):
        fam.predict(nets, moving[0], fixed, cfg)
    with pytest.raises(ValueError, match="translation_steps"):
        action_table(fam.make_config({"translation_steps": [4.0, 1.0]}))
    with pytest.raises(ValueError, match="dims"):
        fam.build(3, cfg)


def _real_slice(shared_data) -> tuple[Image, torch.Tensor]:
    import nibabel as nib

    from regcore.data.slices import split_of

    assert split_of(103) == "held_out"  # never trained on
    d = shared_data / "brain2d"
    arr = np.asarray(nib.load(d / "images/OASIS_OAS1_0456_MR1_axial103.nii.gz").dataobj).squeeze()
    lab = np.asarray(nib.load(d / "labels/OASIS_OAS1_0456_MR1_axial103_seg35.nii.gz").dataobj).squeeze()
    return Image.from_array(arr.astype(np.float32)), torch.from_numpy(lab.astype(np.int64))


def test_shipped_agent_recovers_15_degrees_and_10_voxels(shared_data):
    fixed, labels = _real_slice(shared_data)
    shape = tuple(fixed.shape)
    true = rigid_matrix(
        torch.tensor([[math.radians(15.0)]]), torch.tensor([[10.0, -10.0 / math.sqrt(2)]]), shape
    )
    u = affine_to_displacement(invert_affine(true), shape)
    moving = fixed.with_data(warp(fixed.batch()[:, :1].float(), u, padding_mode="zeros")[0])
    pts = torch.nonzero(labels[::4, ::4] > 0).float() * 4
    moving_labels = warp_labels(labels[None, None], u)  # the same misalignment applied to the label map

    def tre(a: torch.Tensor) -> float:
        return float(
            ((pts @ a[:, :2].T + a[:, 2]) - (pts @ true[0, :, :2].T + true[0, :, 2])).norm(dim=1).mean()
        )

    spec = registry.get("rl_agent")
    method, settings = spec.factory(), spec.make_config()
    method.register(fixed, moving, settings)  # load and cache the weights
    t = time.process_time()  # CPU seconds: the wall clock of a shared CI machine says more about its load
    res = method.register(fixed, moving, settings)
    elapsed = time.process_time() - t
    assert tre(torch.eye(2, 3)) > 10.0
    assert tre(res.affine.float()) < 2.0, tre(res.affine.float())
    print(
        f"agent: {elapsed:.2f} CPU s, {len(res.extras['episode']) - 2} actions, TRE {tre(res.affine.float()):.2f}"
    )
    assert elapsed < 2.0, elapsed
    assert res.extras["episode"][-1]["score"] > res.extras["episode"][0]["score"]
    before = float(dice_per_pair(labels[None, None], moving_labels, torch.zeros_like(res.displacement)))
    after = float(dice_per_pair(labels[None, None], moving_labels, res.displacement))
    assert after > before + 0.3 and after > 0.8, (before, after)
