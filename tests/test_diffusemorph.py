"""DiffuseMorph family: DDPM forward noising and loss, joint training, continuous trajectory, shipped weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from regcore.image import Image
from regcore.methods import registry
from regcore.methods.learned.diffusemorph import (
    TIME_DIM,
    DiffuseMorphSettings,
    diffusion_loss,
    noise_schedule,
    q_sample,
)
from regcore.methods.learned.family import StepContext, get_family
from regcore.train.config import config_from_dict
from regcore.train.objectives import dice_per_pair, similarity_module

SMALL = {"widths": [8, 16, 16], "diffusion_widths": [8, 16, 16], "feature_channels": 2, "timesteps": 100}


def _pair(size: int = 32, shift: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(moving, fixed)`` ``(1, 1, size, size)``: a bright ellipse, shifted by ``shift`` voxels in the moving one."""
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = size / 2

    def blob(dy: float) -> torch.Tensor:
        return torch.sigmoid(2.0 * (1.0 - ((y - c - dy) / 8) ** 2 - ((x - c) / 6) ** 2) * 4)[None, None]

    return blob(shift), blob(0.0)


def _context(family_config: dict, lr: float = 5e-3):
    cfg = config_from_dict(
        {
            "family": "diffusemorph",
            "dims": 2,
            "train_shape": [32, 32],
            "lr": lr,
            "family_config": family_config,
        }
    )
    return cfg, StepContext(
        config=cfg, family_config=cfg.family_config, similarity=similarity_module("lncc", 2)
    )


def test_forward_noising_has_the_ddpm_mean_and_variance():
    _, ab = noise_schedule(1000)
    assert ab.shape == (1000,) and bool((ab[1:] < ab[:-1]).all()) and float(ab[-1]) < 1e-3 < float(ab[0])
    x0 = torch.rand(2, 1, 8, 8)
    t = torch.tensor([10, 600])
    noise = torch.randn(2, 1, 8, 8)
    xt = q_sample(x0, t, noise, ab)
    for i in range(2):  # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps exactly
        a = float(ab[t[i]])
        torch.testing.assert_close(xt[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i])
    # statistics over many draws of q(x_t | x_0): mean sqrt(abar) x0, variance 1 - abar
    x0 = torch.full((20000, 1, 1, 1), 0.8)
    t = torch.full((20000,), 300)
    xt = q_sample(x0, t, torch.randn_like(x0), ab)
    a = float(ab[300])
    assert abs(float(xt.mean()) - math.sqrt(a) * 0.8) < 0.02
    assert abs(float(xt.var()) - (1 - a)) < 0.03
    with pytest.raises(ValueError, match="t must lie"):
        q_sample(x0[:1], torch.tensor([1000]), x0[:1], ab)
    with pytest.raises(ValueError, match="timesteps"):
        noise_schedule(1)


class _Oracle(nn.Module):
    """Stands in for the diffusion U-Net: reads t back from the time embedding and returns the true noise
    ``(x_t - sqrt(abar_t) f) / sqrt(1 - abar_t)`` (or zeros), plus zero feature channels."""

    def __init__(self, fixed: torch.Tensor, alpha_bars: torch.Tensor, features: int, exact: bool = True):
        super().__init__()
        self.fixed, self.ab, self.features, self.exact = fixed, alpha_bars, features, exact
        self.freq = math.exp(-math.log(10000.0) * (TIME_DIM // 2 - 1) / (TIME_DIM // 2))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        t = torch.round(torch.asin(emb[:, TIME_DIM // 2 - 1]) / self.freq).long()
        a = self.ab[t].view(-1, 1, 1, 1)
        eps = (x[:, 1:2] - a.sqrt() * self.fixed) / (1 - a).sqrt()
        eps = eps if self.exact else torch.zeros_like(eps)
        return torch.cat([eps, torch.zeros(x.shape[0], self.features, *x.shape[2:])], 1)


def test_diffusion_loss_is_zero_for_the_true_noise_and_the_noise_power_for_zero():
    fam = get_family("diffusemorph")
    cfg, ctx = _context(SMALL)
    moving, fixed = _pair()
    batch = {"moving": moving.repeat(4, 1, 1, 1), "fixed": fixed.repeat(4, 1, 1, 1)}
    nets = fam.build(2, cfg.family_config)
    _, ab = noise_schedule(100)
    nets["diffusion"] = _Oracle(batch["fixed"], ab, 2, exact=True)
    assert float(fam.losses(nets, batch, ctx)["diffusion"]) < 1e-6
    nets["diffusion"] = _Oracle(batch["fixed"], ab, 2, exact=False)
    torch.manual_seed(3)
    zero = float(fam.losses(nets, batch, ctx)["diffusion"])
    torch.manual_seed(3)
    torch.randint(0, 100, (4,))  # the same draws as losses(): t, then the noise
    assert zero == pytest.approx(float(torch.randn_like(batch["fixed"]).pow(2).mean()), rel=1e-5)
    noise = torch.randn(3, 1, 5, 5)
    assert float(diffusion_loss(noise, noise)) == 0.0
    assert float(diffusion_loss(noise + 0.5, noise)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="predicted_noise shape"):
        diffusion_loss(noise[:1], noise)


def test_short_joint_training_lowers_the_diffusion_and_registration_loss():
    fam = get_family("diffusemorph")
    cfg, ctx = _context(SMALL)
    moving, fixed = _pair()
    batch = {"moving": moving.repeat(4, 1, 1, 1), "fixed": fixed.repeat(4, 1, 1, 1)}
    nets = fam.build(2, cfg.family_config)
    opts = fam.optimizers(nets, cfg.lr)

    def evaluate() -> dict[str, float]:
        torch.manual_seed(7)  # the same t and noise before and after
        with torch.no_grad():
            return {k: float(v) for k, v in fam.losses(nets, batch, ctx).items()}

    before = evaluate()
    for step in range(25):
        ctx.step = step
        fam.train_step(nets, opts, batch, ctx)
    after = evaluate()
    assert after["total"] < before["total"] - 0.05, (before, after)
    assert after["diffusion"] < 0.8 * before["diffusion"], (before, after)
    assert after["similarity"] < before["similarity"], (before, after)


def test_trajectory_runs_from_identity_to_the_final_field_and_maps_show_the_reverse_diffusion():
    fam = get_family("diffusemorph")
    cfg = fam.make_config(SMALL)
    nets = fam.build(2, cfg).eval()
    with torch.no_grad():  # a non-zero velocity: the head of the deformation net outputs a smooth ramp
        nets["deformation"].head.bias.copy_(torch.tensor([1.5, -1.0]))
    moving, fixed = _pair()
    settings = DiffuseMorphSettings(trajectory_steps=6, sampling_steps=4, sampling_start=40)
    with torch.no_grad():
        pred = fam.predict(nets, moving, fixed, cfg, settings)
        assert pred.trajectory is None and "maps" not in pred.extras  # views are not part of the timed field
        field = pred.displacement.clone()
        pred = fam.explain(nets, moving, fixed, cfg, settings, pred)
    assert torch.equal(pred.displacement, field)
    traj = pred.trajectory
    assert traj is not None and len(traj) == 6
    assert torch.equal(traj[0], torch.zeros_like(pred.displacement))
    assert torch.equal(traj[-1], pred.displacement)
    norms = [float(u.abs().mean()) for u in traj]
    assert all(a < b for a, b in zip(norms, norms[1:])), norms
    assert pred.extras["sampling_steps"] == 4.0 and 0 < len(pred.extras["maps"]) <= 5
    assert all(m.shape == (1, 1, 32, 32) for m in pred.extras["maps"].values())
    half_settings = DiffuseMorphSettings(gamma=0.5, sampling_steps=0)
    with torch.no_grad():
        half = fam.explain(
            nets, moving, fixed, cfg, half_settings, fam.predict(nets, moving, fixed, cfg, half_settings)
        )
    torch.testing.assert_close(half.velocity, 0.5 * pred.velocity)
    assert half.extras["sampling_steps"] == 0.0 and list(half.extras["maps"]) == [
        "score (noise estimate at t=0, min-max scaled)"
    ]
    zero = fam.predict(nets, moving, fixed, cfg, DiffuseMorphSettings(gamma=0.0, sampling_steps=0))
    assert float(zero.displacement.detach().abs().max()) == 0.0


def test_bad_input_raises_a_value_error_naming_the_field():
    fam = get_family("diffusemorph")
    cfg = fam.make_config(SMALL)
    nets = fam.build(2, cfg).eval()
    moving, fixed = _pair()
    with pytest.raises(ValueError, match="moving shape"):
        fam.predict(nets, moving[..., :16], fixed, cfg)
    with pytest.raises(ValueError, match="fixed must be"):
        fam.predict(nets, moving, fixed[0], cfg)
    with pytest.raises(ValueError, match="sampling_start"):
        fam.predict(nets, moving, fixed, cfg, DiffuseMorphSettings(sampling_start=100))
    with pytest.raises(ValueError, match="gamma"):
        fam.predict(nets, moving, fixed, cfg, DiffuseMorphSettings(gamma=1.5))
    with pytest.raises(ValueError, match="gamma"):
        registry.get("diffusemorph").make_config({"gamma": 2.0})
    with pytest.raises(ValueError, match="timesteps"):
        fam.make_config({"timesteps": 1})


@pytest.mark.shared_data
def test_shipped_weights_raise_dice_on_a_real_held_out_oasis_slice(shared_data):
    """Axial slice 103 is a held-out position (regcore.data.slices): the model never saw it."""
    import nibabel as nib

    from regcore.data.slices import split_of

    assert split_of(103) == "held_out"
    d = shared_data / "brain2d"
    load = lambda p: np.asarray(nib.load(p).dataobj).squeeze()  # noqa: E731
    fixed = Image.from_array(load(d / "images/OASIS_OAS1_0455_MR1_axial103.nii.gz").astype(np.float32))
    moving = Image.from_array(load(d / "images/OASIS_OAS1_0456_MR1_axial103.nii.gz").astype(np.float32))
    fl, ml = (
        torch.from_numpy(load(d / f"labels/OASIS_OAS1_{s}_MR1_axial103_seg35.nii.gz").astype(np.int64))[
            None, None
        ]
        for s in ("0455", "0456")
    )
    spec = registry.get("diffusemorph")
    res = spec.factory().register(fixed, moving, spec.make_config())
    before = float(dice_per_pair(fl, ml, torch.zeros_like(res.displacement)))
    after = float(dice_per_pair(fl, ml, res.displacement))
    assert after > before + 0.01, (before, after)
    assert res.extras["sampling_steps"] > 0 and res.extras["maps"]
