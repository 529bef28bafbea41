"""Adversarial (GAN) registration family: the game trains, the discriminator learns alignment, the shipped
weights register a real OASIS slice pair, bad input is a clear error."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from regcore.image import Image
from regcore.methods import registry
from regcore.methods.learned.adversarial import score_map
from regcore.methods.learned.family import StepContext, get_family
from regcore.spatial.warp import warp
from regcore.train.config import config_from_dict
from regcore.train.datasets import PairSource
from regcore.train.objectives import dice_per_pair, similarity_module

SHAPE = [32, 32]


def _setup(**family_config):
    cfg = config_from_dict(
        {
            "family": "adversarial",
            "data": "shapes",
            "train_shape": SHAPE,
            "batch_size": 4,
            "lr": 3e-3,
            "augment": False,
            "intensity_augment": False,
            "regularizer_weight": 0.1,
            "family_config": family_config,
        }
    )
    fam = cfg.learned_family()
    torch.manual_seed(0)
    nets = fam.build(2, cfg.family_config)
    ctx = StepContext(
        config=cfg, family_config=cfg.family_config, similarity=similarity_module(cfg.similarity, 2)
    )
    return cfg, fam, nets, fam.optimizers(nets, cfg.lr), ctx, PairSource(cfg)


def _aligned_gap(nets, batch) -> float:
    """Mean discriminator probability of 'aligned' for truly aligned pairs (fixed, moving o true field)
    minus that for the misaligned (fixed, moving) pairs of the same batch."""
    f = batch["fixed"]
    aligned = warp(batch["moving"], batch["true_displacement"])
    with torch.no_grad():
        good = score_map(nets["discriminator"](f, aligned), tuple(SHAPE)).mean()
        bad = score_map(nets["discriminator"](f, batch["moving"]), tuple(SHAPE)).mean()
    return float(good - bad)


def test_short_training_lowers_generator_loss_and_discriminator_learns_alignment():
    cfg, fam, nets, opts, ctx, source = _setup()
    batch = source.batch(np.random.default_rng(1))
    unseen = source.batch(np.random.default_rng(2))
    untrained = copy.deepcopy(nets)
    gap_before = _aligned_gap(nets, unseen)
    history = []
    for step in range(20):
        ctx.step = step
        history.append(fam.train_step(nets, opts, batch, ctx))
    assert {"generator", "discriminator", "score_real", "score_warped", "adversarial", "total"} <= set(
        history[0]
    )
    # the generator's loss is judged by a moving discriminator: compare the untrained and the trained
    # generator against the same (final) discriminator
    untrained["discriminator"].load_state_dict(nets["discriminator"].state_dict())
    with torch.no_grad():
        start = fam.losses(untrained, batch, ctx)
        end = fam.losses(nets, batch, ctx)
    assert float(end["generator"]) < float(start["generator"]) - 0.01, (start, end)
    assert float(end["adversarial"]) < float(start["adversarial"])  # it learned to fool the discriminator
    # the discriminator separates its own positives from the warped images it is shown ...
    assert np.mean([h["score_real"] - h["score_warped"] for h in history[-5:]]) > 0.02
    # ... and that carries over to truly aligned vs misaligned pairs it never saw
    gap_after = _aligned_gap(nets, unseen)
    assert gap_after > 0.005 and gap_after > 10 * abs(gap_before), (gap_before, gap_after)


def test_adversarial_only_is_a_weight_of_zero_on_lncc():
    cfg, fam, nets, opts, ctx, source = _setup(lncc_weight=0.0, adversarial_weight=1.0)
    batch = source.batch(np.random.default_rng(1))
    terms = fam.train_step(nets, opts, batch, ctx)
    expected = terms["adversarial"] + cfg.regularizer_weight * terms["regularizer"]
    assert terms["generator"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_predict_returns_the_discriminator_score_map():
    fam = get_family("adversarial")
    cfg = fam.make_config({})
    nets = fam.build(2, cfg).eval()
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        pred = fam.predict(nets, x, x.flip(-1), cfg)
    maps = pred.extras["maps"]
    assert pred.displacement.shape == (2, 2, 32, 40)
    assert maps["discriminator_score"].shape == (1, 1, 32, 40)
    assert 0.0 <= float(maps["discriminator_score"].min()) <= float(maps["discriminator_score"].max()) <= 1.0
    assert isinstance(pred.extras["discriminator_score"], float)


def test_bad_input_is_a_clear_error():
    fam = get_family("adversarial")
    with pytest.raises(ValueError, match="blend_alpha"):
        fam.make_config({"blend_alpha": 2.0})
    cfg = fam.make_config({})
    nets = fam.build(2, cfg)
    with pytest.raises(ValueError, match="moving"):
        fam.predict(nets, torch.rand(1, 2, 32, 32), torch.rand(1, 1, 32, 32), cfg)
    with pytest.raises(ValueError, match="same shape"):
        fam.predict(nets, torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 40), cfg)


@pytest.mark.shared_data
def test_shipped_weights_raise_dice_on_a_real_oasis_slice_pair(shared_data):
    """OASIS 0456 -> 0455 axial slice 103: a held-out position (regcore.data.slices), never trained on."""
    import nibabel as nib

    d = shared_data / "brain2d"

    def load(name: str) -> np.ndarray:
        return np.asarray(nib.load(d / name).dataobj).squeeze()

    fixed = Image.from_array(load("images/OASIS_OAS1_0455_MR1_axial103.nii.gz").astype(np.float32))
    moving = Image.from_array(load("images/OASIS_OAS1_0456_MR1_axial103.nii.gz").astype(np.float32))
    fl = torch.from_numpy(load("labels/OASIS_OAS1_0455_MR1_axial103_seg35.nii.gz").astype(np.int64))[
        None, None
    ]
    ml = torch.from_numpy(load("labels/OASIS_OAS1_0456_MR1_axial103_seg35.nii.gz").astype(np.int64))[
        None, None
    ]
    spec = registry.get("adversarial")
    res = spec.factory().register(fixed, moving, spec.make_config())
    before = float(dice_per_pair(fl, ml, torch.zeros_like(res.displacement)))
    after = float(dice_per_pair(fl, ml, res.displacement))
    assert after > before + 0.01, (before, after)
    assert res.extras["maps"]["discriminator_score"].ndim == 4
