"""ViT-V-Net family: shapes and zero initial field, the transformer bottleneck, 3D, training, shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regcore.methods import registry
from regcore.methods.learned.family import StepContext, get_family
from regcore.methods.learned.vit_v_net import ViTVNet
from regcore.train.config import config_from_dict
from regcore.train.datasets import PairSource
from regcore.train.objectives import dice_per_pair, similarity_module

SMALL = {"widths": [8, 8, 16], "hidden": 16, "heads": 2, "depth": 1, "pos_grid": 4}


def test_untrained_net_predicts_a_near_zero_field_of_the_input_shape():
    fam = get_family("vit_v_net")
    cfg = fam.make_config({})
    assert fam.divisor(2, cfg) == 16  # 3 down-samplings x patch 2
    nets = fam.build(2, cfg).eval()
    x, y = torch.rand(2, 1, 48, 64), torch.rand(2, 1, 48, 64)
    with torch.no_grad():
        u = fam.predict(nets, x, y, cfg).displacement
    assert u.shape == (2, 2, 48, 64) and float(u.abs().max()) < 1e-3


def test_the_bottleneck_attends_globally():
    """A change in one corner of the input changes the transformer's output at the opposite corner: every
    patch attends to every other one (a 3x3-conv bottleneck of this depth could not reach that far)."""
    torch.manual_seed(0)
    net = ViTVNet(2, **{k: tuple(v) if isinstance(v, list) else v for k, v in SMALL.items()}).eval()
    x = torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        feats = net.stem(x)
        for down in net.down:
            feats = down(feats)
        a = net.tokens(feats)
        x2 = x.clone()
        x2[:, :, :8, :8] = 1.0 - x2[:, :, :8, :8]
        feats2 = net.stem(x2)
        for down in net.down:
            feats2 = down(feats2)
        b = net.tokens(feats2)
    assert a.shape == (1, 16, 8, 8)
    assert float((a[..., -1, -1] - b[..., -1, -1]).abs().max()) > 1e-4


def test_3d_forward_and_backward_at_a_small_size():
    fam = get_family("vit_v_net")
    cfg = fam.make_config(SMALL)
    nets = fam.build(3, cfg)
    x, y = torch.rand(1, 1, 16, 16, 24), torch.rand(1, 1, 16, 16, 24)
    u = fam.predict(nets, x, y, cfg).displacement
    assert u.shape == (1, 3, 16, 16, 24)
    u.sum().backward()
    assert nets["net"].head.weight.grad is not None and float(nets["net"].head.weight.grad.abs().sum()) > 0


def test_any_input_size_works_through_the_interpolated_position_embedding():
    fam = get_family("vit_v_net")
    cfg = fam.make_config(SMALL)
    nets = fam.build(2, cfg).eval()
    with torch.no_grad():
        for shape in ((32, 32), (16, 80), (96, 112)):
            x = torch.rand(1, 1, *shape)
            assert fam.predict(nets, x, x, cfg).displacement.shape == (1, 2, *shape)


def test_bad_inputs_raise_clear_errors():
    fam = get_family("vit_v_net")
    cfg = fam.make_config(SMALL)
    nets = fam.build(2, cfg)
    with pytest.raises(ValueError, match="divisible by 8"):
        fam.predict(nets, torch.rand(1, 1, 30, 32), torch.rand(1, 1, 30, 32), cfg)
    with pytest.raises(ValueError, match="hidden"):
        fam.build(2, fam.make_config({"hidden": 30, "heads": 4}))
    with pytest.raises(ValueError, match="patch"):
        fam.make_config({"patch": 0})


def test_a_short_training_lowers_the_loss():
    fam = get_family("vit_v_net")
    cfg = config_from_dict(
        {
            "family": "vit_v_net",
            "family_config": SMALL,
            "train_shape": [32, 32],
            "batch_size": 2,
            "synthetic_pool": 4,
            "supervision": "weak",
            "lr": 3e-3,
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
    spec = registry.get("vit_v_net")
    res = spec.factory().register(fixed, moving, spec.make_config())
    assert res.displacement.shape == (1, 2, *fixed.shape)
    before = float(dice_per_pair(lab("0455"), lab("0456"), torch.zeros_like(res.displacement)))
    after = float(dice_per_pair(lab("0455"), lab("0456"), res.displacement))
    assert after > before + 0.02, (before, after)
