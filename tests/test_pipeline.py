"""Registration pipelines (regcore.pipeline): an affine/rigid stage before a method, composed into one field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regcore.image import Image
from regcore.methods.base import RegistrationResult
from regcore.pipeline import INITIAL_STAGES, register_after_initial
from regcore.register import run_registration
from regcore.spatial.warp import warp


def _blob_pair(shift=(3.0, -2.0), shape=(48, 56)):
    """A smooth image and the same image moved so that fixed(x) = moving(x + shift)."""
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    img = np.exp(-(((yy - 22) / 7.0) ** 2 + ((xx - 27) / 10.0) ** 2)) + 0.6 * np.exp(
        -(((yy - 14) / 4.0) ** 2 + ((xx - 38) / 5.0) ** 2)
    )
    fixed = torch.tensor(img, dtype=torch.float32)[None, None]
    u = torch.zeros(1, 2, *shape)
    u[:, 0], u[:, 1] = -shift[0], -shift[1]
    moving = warp(
        fixed, u, padding_mode="zeros"
    )  # moving(y) = fixed(y - shift): fixed(x) = moving(x + shift)
    return Image.from_array(fixed[0, 0].numpy()), Image.from_array(moving[0, 0].numpy())


def _zero_field(fixed: Image, moving: Image, progress=None) -> RegistrationResult:
    u = torch.zeros(1, fixed.ndim, *fixed.shape)
    return RegistrationResult(
        method="zero", fixed=fixed, moving=moving, warped=moving, displacement=u, runtime_s=0.5
    )


def _constant_field(c):
    def register(fixed: Image, moving: Image, progress=None) -> RegistrationResult:
        u = torch.zeros(1, fixed.ndim, *fixed.shape)
        u[:, 0], u[:, 1] = c
        return RegistrationResult(method="const", fixed=fixed, moving=moving, warped=moving, displacement=u)

    return register


def test_an_affine_stage_finds_a_translation_and_a_zero_second_stage_keeps_it():
    fixed, moving = _blob_pair()
    result = register_after_initial("affine", fixed, moving, _zero_field)
    centre = result.displacement[0, :, 10:-10, 10:-10]
    assert abs(float(centre[0].mean()) - 3.0) < 0.3 and abs(float(centre[1].mean()) + 2.0) < 0.3
    assert [s["stage"] for s in result.extras["stages"]] == ["affine", "deformable"]
    assert result.runtime_s >= 0.5 and result.affine is None


def test_the_two_stages_compose_translations_by_adding_them():
    fixed, moving = _blob_pair()
    first = register_after_initial("rigid", fixed, moving, _zero_field).displacement
    total = register_after_initial("rigid", fixed, moving, _constant_field((1.0, 0.5))).displacement
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert torch.allclose(total[inner][:, 0], first[inner][:, 0] + 1.0, atol=0.05)
    assert torch.allclose(total[inner][:, 1], first[inner][:, 1] + 0.5, atol=0.05)


def test_none_runs_the_method_alone_and_bad_stages_are_named():
    fixed, moving = _blob_pair()
    assert register_after_initial("none", fixed, moving, _zero_field).method == "zero"
    with pytest.raises(ValueError, match="initial must be one of none, rigid, affine"):
        register_after_initial("bspline", fixed, moving, _zero_field)
    with pytest.raises(ValueError, match="initial must be one of"):
        run_registration(fixed, moving, "demons", initial="elastic")


def test_demons_after_an_affine_stage_follows_a_rotation_demons_alone_cannot():
    from regcore.spatial.affine import affine_to_displacement, invert_affine, rigid_matrix

    fixed, _ = _blob_pair(shift=(0.0, 0.0))
    shape = fixed.shape
    rotation = rigid_matrix(torch.tensor([[0.6]]), torch.zeros(1, 2), shape)  # 34 degrees about the centre
    moving = fixed.with_data(
        warp(fixed.batch(), affine_to_displacement(rotation, shape), padding_mode="zeros")[0]
    )
    truth = affine_to_displacement(invert_affine(rotation), shape)  # moving(x + truth(x)) = fixed(x)
    alone, _ = run_registration(fixed, moving, "demons")
    result, _ = run_registration(fixed, moving, "demons", initial="affine")
    blob = fixed.data[0] > 0.3  # where the image has structure to register

    def error(u: torch.Tensor) -> float:
        return float((u[0] - truth[0]).norm(dim=0)[blob].mean())

    before, after = error(alone.displacement), error(result.displacement)
    assert after < 1.0 and after < 0.5 * before, (before, after)
    assert result.extras["stages"][1]["method"] == "demons"


def test_the_cli_offers_the_same_stages():
    from regcore.cli import build_parser

    action = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices["register"]._actions
        if a.dest == "initial"
    )
    assert tuple(action.choices) == INITIAL_STAGES and action.default == "none"
