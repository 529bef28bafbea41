"""The mechanism a learned family shows (regcore.mechanism): trajectory, episode, maps, convergence.

Analytic cases on hand-made results (a translation episode, a straight-line trajectory), the model-grid ->
image-grid conversion of inference, and a real neural-ODE run whose trajectory ends at its result.
"""

from __future__ import annotations

import numpy as np
import torch

from regcore import mechanism
from regcore.data import sample_pair
from regcore.image import Image
from regcore.methods.base import RegistrationResult
from regcore.methods.learned.family import Prediction
from regcore.methods.learned.inference import mechanism_to_image_grid
from regcore.nets.inputs import plan_model_grid
from regcore.register import run_pair
from regcore.spatial.warp import warp


def _result(extras: dict, shape=(24, 32)) -> RegistrationResult:
    rng = np.random.default_rng(0)
    fixed = Image.from_array(rng.random(shape).astype(np.float32))
    moving = Image.from_array(rng.random(shape).astype(np.float32))
    zero = torch.zeros(1, 2, *shape)
    return RegistrationResult(
        method="x", fixed=fixed, moving=moving, warped=moving, displacement=zero, runtime_s=0.0, extras=extras
    )


def test_nothing_to_show_without_mechanism_extras():
    assert not mechanism.has_mechanism({"predict_s": 0.1, "model_shape": (8, 8)})
    assert mechanism.has_mechanism({"loss_history": [1.0, 0.5]})
    r = _result({})
    assert mechanism.trajectory_frames(r) == [] and mechanism.episode_steps(r) == []
    assert mechanism.mechanism_maps(r) == {} and mechanism.loss_history(r) == []


def test_an_episode_of_translations_replays_as_shifted_images():
    shift = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -3.0]])  # fixed voxel x -> moving voxel x + (2, -3)
    r = _result(
        {
            "episode": [
                {"action": "noop", "reward": 0.0, "score": 0.1},
                {"action": "+x", "reward": 0.5, "score": 0.9, "affine": shift},
            ]
        }
    )
    steps = mechanism.episode_steps(r)
    moving = r.moving.batch()
    assert [s.action for s in steps] == ["noop", "+x"] and steps[1].reward == 0.5
    np.testing.assert_allclose(steps[0].frame, moving[0, 0].numpy())  # no affine yet: the moving image
    u = torch.zeros(1, 2, 24, 32)
    u[:, 0], u[:, 1] = 2.0, -3.0
    np.testing.assert_allclose(steps[1].frame, warp(moving, u)[0, 0].numpy(), atol=1e-5)


def test_a_trajectory_starts_at_the_moving_image_and_maps_are_sliced():
    u = torch.zeros(1, 3, 6, 8, 10)
    u[:, 2] = 1.5
    shape = (6, 8, 10)
    rng = np.random.default_rng(1)
    img = Image.from_array(rng.random(shape).astype(np.float32))
    r = RegistrationResult(
        method="x",
        fixed=img,
        moving=img,
        warped=img,
        displacement=u,
        runtime_s=0.0,
        extras={"trajectory": [torch.zeros_like(u), u], "maps": {"score": torch.ones(1, 1, *shape)}},
    )
    frames = mechanism.trajectory_frames(r, axis=0, index=3)
    assert len(frames) == 2 and frames[0].shape == (8, 10)
    np.testing.assert_allclose(frames[0], img.numpy()[3], atol=1e-6)
    np.testing.assert_allclose(frames[1], warp(img.batch(), u)[0, 0, 3].numpy(), atol=1e-6)
    assert mechanism.mechanism_maps(r, axis=2, index=4)["score"].shape == (6, 8)


def test_inference_puts_the_mechanism_on_the_image_grid():
    grid = plan_model_grid((20, 30), (1.0, 1.0), 2.0, 8, None)  # resized (10, 15), padded (16, 16)
    shift = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # one model voxel = two image voxels
    pred = Prediction(
        displacement=torch.zeros(1, 2, 16, 16),
        trajectory=[torch.ones(1, 2, 16, 16)],
        extras={"maps": {"m": torch.ones(1, 1, 16, 16)}, "episode": [{"action": "a", "affine": shift}]},
    )
    out = mechanism_to_image_grid(pred, grid)
    assert out["trajectory"][0].shape == (1, 2, 20, 30) and out["maps"]["m"].shape == (1, 1, 20, 30)
    affine = out["episode"][0]["affine"]
    assert affine.shape == (2, 3)
    assert abs(float(affine[0, 2]) - (20 - 1) / (10 - 1)) < 1e-4  # model voxel -> image voxels on axis 0
    assert abs(float(affine[1, 2])) < 1e-5


def test_a_neural_ode_run_ends_its_trajectory_at_its_result():
    pair = sample_pair("brain", dims=2, fixed=0, moving=1, resolution_mm=2.0)
    result, _ = run_pair(pair, "neural_ode", {"iterations": 5, "steps": 4})
    frames = mechanism.trajectory_frames(result)
    assert len(frames) == 5
    np.testing.assert_allclose(frames[0], result.moving.numpy(), atol=1e-5)
    np.testing.assert_allclose(frames[-1], result.warped.numpy(), atol=1e-4)
    assert len(mechanism.loss_history(result)) == 5
