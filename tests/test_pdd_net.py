"""PDD-Net family: the analytic cost volume and soft-argmin, shapes and extras, 3D, training, shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from regcore.methods import registry
from regcore.methods.learned.family import StepContext, get_family
from regcore.methods.learned.pdd_net import (
    correlation_cost,
    displacement_labels,
    regularise_cost,
    soft_argmin,
)
from regcore.train.config import config_from_dict
from regcore.train.datasets import PairSource
from regcore.train.objectives import dice_per_pair, similarity_module


@pytest.mark.parametrize("dims,radius,step", [(2, 3, 1.0), (2, 2, 2.0), (3, 1, 1.0)])
def test_soft_argmin_of_a_single_minimum_is_that_displacement(dims, radius, step):
    labels = displacement_labels(dims, radius, step)
    assert labels.shape == ((2 * radius + 1) ** dims, dims)
    shape = (3,) * dims
    cost = torch.full((2, len(labels), *shape), 40.0)
    picks = [len(labels) - 1, 1]  # a corner label for batch 0, another for batch 1
    for b, j in enumerate(picks):
        cost[b, j] = 0.0
    u = soft_argmin(cost, labels)
    assert u.shape == (2, dims, *shape)
    for b, j in enumerate(picks):
        expected = labels[j].view(dims, *(1,) * dims).expand(dims, *shape)
        assert torch.allclose(u[b], expected, atol=1e-6)


def test_soft_argmin_of_a_symmetric_cost_is_its_centre_and_rejects_a_label_mismatch():
    labels = displacement_labels(2, 2)
    bowl = (labels**2).sum(1).view(1, -1, 1, 1)  # quadratic around zero displacement: symmetric
    assert torch.allclose(soft_argmin(0.3 * bowl, labels), torch.zeros(1, 2, 1, 1), atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        soft_argmin(torch.zeros(1, 24, 2, 2), labels)


def test_correlation_cost_is_zero_at_the_true_shift():
    """Moving features = fixed features shifted by (2, -1): the cost of label (2, -1) is 0 where the shift
    stays inside the grid, every other label costs more."""
    torch.manual_seed(0)
    f = F.normalize(torch.randn(1, 8, 12, 14), dim=1)
    m = torch.roll(f, (2, -1), (2, 3))  # m(x + (2, -1)) = f(x)
    cost = correlation_cost(f, m, radius=3, step=1)
    labels = displacement_labels(2, 3)
    j = int(((labels - torch.tensor([2.0, -1.0])).abs().sum(1) == 0).nonzero())
    inner = cost[0, :, 1:-3, 2:-2]
    assert float(inner[j].abs().max()) < 1e-5
    assert torch.equal(inner.argmin(0), torch.full_like(inner[0], j, dtype=torch.long))


def test_regularisation_keeps_a_flat_cost_flat_and_smooths_an_outlier():
    data = torch.ones(1, 9, 5, 5)
    out = regularise_cost(data, torch.tensor([1.0, 1.0]), dims=2, k=3)
    assert torch.allclose(out, torch.full_like(data, 3.0))  # 1 + 1 * (1 + 1 * 1)
    spike = torch.ones(1, 9, 5, 5)
    spike[0, 4, 2, 2] = 0.0  # one voxel prefers zero displacement
    smoothed = regularise_cost(spike, torch.tensor([1.0]), dims=2, k=3) - 1.0
    assert float(smoothed[0, 4, 2, 1]) < 1.0  # its neighbours now lean towards it too
    assert float(smoothed[0, 4, 0, 0]) == pytest.approx(1.0)  # far voxels are untouched


def test_identical_images_give_a_near_zero_field_and_the_extras():
    fam = get_family("pdd_net")
    cfg = fam.make_config({})
    nets = fam.build(2, cfg).eval()
    x = F.avg_pool2d(torch.rand(1, 1, 64, 80), 5, 1, 2)
    with torch.no_grad():
        pred = fam.predict(nets, x, x, cfg)
    assert pred.displacement.shape == (1, 2, 64, 80)
    # zero displacement is the cheapest label everywhere; the soft-argmin of an untrained, smooth cost
    # leans a little towards similar-looking neighbours: well under a quarter of the label spacing
    assert float(pred.displacement.abs().mean()) < 0.25 * pred.extras["label_spacing_vox"]
    k = 2 * cfg.radius + 1
    centre = pred.extras["cost_volume_centre"]
    assert centre.shape == (k, k) and int(centre.argmin()) == (k * k) // 2  # zero displacement is cheapest
    assert set(pred.extras["maps"]) == {"cost_min", "confidence"}
    assert all(m.shape == (1, 1, 64, 80) for m in pred.extras["maps"].values())
    assert pred.extras["label_spacing_vox"] == 2.0
    # far fewer weights than VoxelMorph (its default 2D U-Net has ~100k; building it here would import MONAI)
    assert sum(p.numel() for p in nets.parameters()) < 10_000


def test_3d_forward_and_backward_at_a_small_size():
    fam = get_family("pdd_net")
    cfg = fam.make_config({"radius": 2, "widths": [4, 8, 8]})
    nets = fam.build(3, cfg)
    x, y = torch.rand(1, 1, 16, 16, 24), torch.rand(1, 1, 16, 16, 24)
    pred = fam.predict(nets, x, y, cfg)
    assert pred.displacement.shape == (1, 3, 16, 16, 24)
    assert pred.extras["cost_volume_centre"].shape == (5, 5)
    pred.displacement.square().sum().backward()
    assert all(p.grad is not None for p in nets["features"].parameters())


def test_bad_inputs_raise_clear_errors():
    fam = get_family("pdd_net")
    cfg = fam.make_config({})
    nets = fam.build(2, cfg)
    with pytest.raises(ValueError, match="divisible by 2"):
        fam.predict(nets, torch.rand(1, 1, 31, 32), torch.rand(1, 1, 31, 32), cfg)
    with pytest.raises(ValueError, match="moving shape"):
        fam.predict(nets, torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 36), cfg)
    with pytest.raises(ValueError, match="moving must be"):
        fam.predict(nets, torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32), cfg)
    with pytest.raises(ValueError, match="radius"):
        fam.make_config({"radius": 0})
    with pytest.raises(ValueError, match="widths"):
        fam.build(2, fam.make_config({"widths": [8, 8], "levels": 2}))


def test_a_short_training_lowers_the_loss():
    fam = get_family("pdd_net")
    cfg = config_from_dict(
        {
            "family": "pdd_net",
            "family_config": {"radius": 1, "widths": [4, 8, 8]},
            "train_shape": [32, 32],
            "batch_size": 2,
            "synthetic_pool": 4,
            "supervision": "weak",
            "lr": 1e-2,
            "augment": False,
            "intensity_augment": False,
            "regularizer_weight": 0.1,
            "device": "cpu",
        }
    )
    torch.manual_seed(0)
    nets = fam.build(2, cfg.family_config)
    opts = fam.optimizers(nets, cfg.lr)
    batch = PairSource(cfg).batch(np.random.default_rng(1), 2)
    ctx = StepContext(
        config=cfg, family_config=cfg.family_config, similarity=similarity_module(cfg.similarity, 2)
    )
    with torch.no_grad():
        first = float(fam.losses(nets, batch, ctx)["total"])
    for step in range(15):
        ctx.step = step
        fam.train_step(nets, opts, batch, ctx)
    with torch.no_grad():
        last = float(fam.losses(nets, batch, ctx)["total"])
    assert last < first - 0.02, (first, last)


@pytest.mark.shared_data
def test_shipped_weights_raise_dice_on_a_held_out_real_pair(shared_data):
    """The shipped 2D weights (trained on OASIS slices at training positions) on axial slice 103 of
    0456 -> 0455, a held-out position (regcore.data.slices.split_of(103) == "held_out")."""
    import nibabel as nib

    from regcore.data.slices import split_of
    from regcore.image import Image

    assert split_of(103) == "held_out"
    d = shared_data / "brain2d"
    load = lambda p: np.asarray(nib.load(p).dataobj).squeeze()  # noqa: E731
    fixed = Image.from_array(load(d / "images/OASIS_OAS1_0455_MR1_axial103.nii.gz").astype(np.float32))
    moving = Image.from_array(load(d / "images/OASIS_OAS1_0456_MR1_axial103.nii.gz").astype(np.float32))
    lab = lambda s: torch.from_numpy(  # noqa: E731
        load(d / f"labels/OASIS_OAS1_{s}_MR1_axial103_seg35.nii.gz").astype(np.int64)
    )[None, None]
    spec = registry.get("pdd_net")
    res = spec.factory().register(fixed, moving, spec.make_config())
    assert res.displacement.shape == (1, 2, *fixed.shape)
    assert res.extras["maps"]["cost_min"].shape == (1, 1, *fixed.shape)  # brought to the image grid
    before = float(dice_per_pair(lab("0455"), lab("0456"), torch.zeros_like(res.displacement)))
    after = float(dice_per_pair(lab("0455"), lab("0456"), res.displacement))
    assert after > before + 0.02, (before, after)
