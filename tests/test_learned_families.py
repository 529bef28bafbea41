"""Family-specific mechanisms of the learned zoo (each family's own analytic or behavioural check).

The shared contract (a few training steps lower the loss, for every family) is in test_train.py;
the plug-in proof in test_learned_plugin.py; shipped weights and real pairs in test_learned_methods.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from regcore.methods.learned.deepflash import band_limited_field
from regcore.methods.learned.family import all_families, get_family
from regcore.methods.learned.prob_voxelmorph import kl_divergence


def test_every_family_declares_its_card_and_builds_in_2d_and_3d():
    for fam in (f for f in all_families() if f.module().startswith("regcore.")):
        assert fam.title and fam.summary.count(".") >= 2 and fam.paper, fam.name
        config = fam.make_config({})
        for dims in fam.dims:
            nets = fam.build(dims, config)
            assert isinstance(nets, torch.nn.ModuleDict) and len(list(nets.parameters())) > 0


def test_band_limited_field_is_the_inverse_fourier_transform():
    k, shape = 8, (32, 40)
    coeffs = torch.zeros(1, 4, k, k)
    coeffs[0, 0, 0, 0] = 1.5  # frequency 0, component 0: constant 1.5
    coeffs[0, 1, 1, 0] = 0.5  # frequency (1, 0), component 1: 0.5 exp(2 pi i x / 32)
    v = band_limited_field(coeffs, shape)
    assert torch.allclose(v[0, 0], torch.full(shape, 1.5), atol=1e-6)
    x = torch.arange(shape[0], dtype=torch.float32).view(-1, 1).expand(shape)
    assert torch.allclose(v[0, 1], 0.5 * torch.cos(2 * math.pi * x / shape[0]), atol=1e-5)


def test_dirnet_constant_control_points_give_a_constant_field():
    fam = get_family("dirnet")
    cfg = fam.make_config({"widths": [8, 8], "control_spacing": 4})
    nets = fam.build(2, cfg)
    with torch.no_grad():
        nets["head"].out.bias.copy_(torch.tensor([1.0, -2.0]))
    x = torch.rand(1, 1, 16, 24)
    u = fam.predict(nets, x, x, cfg).displacement
    assert torch.allclose(u[0, 0], torch.ones(16, 24), atol=1e-5)  # B-splines are a partition of unity
    assert torch.allclose(u[0, 1], torch.full((16, 24), -2.0), atol=1e-5)


def test_lapirn_trains_coarse_to_fine_and_returns_each_level():
    fam = get_family("lapirn")
    cfg = fam.make_config({"widths": [8, 8], "stage_steps": [10, 20]})
    assert [fam.active_levels(cfg, s) for s in (0, 9, 10, 29, 30, 10**6, None)] == [1, 1, 2, 2, 3, 3, 3]
    nets = fam.build(2, cfg)
    x = torch.rand(1, 1, 32, 32)
    pred = fam.predict(nets, x, x, cfg)
    assert [tuple(u.shape[2:]) for u in pred.extras["level_displacements"]] == [(8, 8), (16, 16)]
    assert pred.displacement.shape == (1, 2, 32, 32)
    path = pred.trajectory  # identity, then each level on the full grid: the Mechanism view steps through it
    assert len(path) == 4 and all(u.shape == (1, 2, 32, 32) for u in path)
    assert float(path[0].abs().max()) == 0.0 and torch.equal(path[-1], pred.displacement)


def test_cyclemorph_reports_inverse_consistency():
    fam = get_family("cyclemorph")
    cfg = fam.make_config({"widths": [8, 8]})
    nets = fam.build(2, cfg)
    x = torch.rand(1, 1, 16, 16)
    pred = fam.predict(nets, x, torch.rand(1, 1, 16, 16), cfg)
    assert pred.extras["backward_displacement"].shape == pred.displacement.shape
    assert 0.0 <= pred.extras["inverse_consistency_error_vox"] < 1e-3  # untrained nets: near-zero fields


def test_probabilistic_kl_is_smallest_at_the_prior_variance():
    mean = torch.zeros(1, 2, 8, 8)
    lam = 10.0
    best = math.log(1.0 / (lam * 2 * 2))  # d/dlogvar [lam 2n var - logvar] = 0
    values = [float(kl_divergence(mean, torch.full_like(mean, best + d), lam)) for d in (-1.0, 0.0, 1.0)]
    assert values[1] < values[0] and values[1] < values[2]
    rough = mean.clone()
    rough[:, :, ::2] = 1.0
    assert float(kl_divergence(rough, torch.full_like(mean, best), lam)) > values[1]


@pytest.mark.parametrize(
    "name", ["hypermorph", "prob_voxelmorph", "lku_net", "dirnet", "deepflash", "cyclemorph", "lapirn"]
)
def test_untrained_family_predicts_near_identity(name):
    fam = get_family(name)
    cfg = fam.make_config({})
    nets = fam.build(2, cfg).eval()
    div = fam.divisor(2, cfg)
    x = torch.rand(1, 1, 2 * div, 2 * div)
    with torch.no_grad():
        u = fam.predict(nets, x, x, cfg).displacement
    assert u.shape == (1, 2, 2 * div, 2 * div) and float(u.abs().max()) < 0.05


def test_deepflash_constant_coarse_velocity_is_a_constant_field_and_the_field_is_band_limited():
    fam = get_family("deepflash")
    cfg = fam.make_config({"widths": [8, 8], "features": 4, "frequencies": 8})
    nets = fam.build(2, cfg)
    with torch.no_grad():
        nets["head"].bias.copy_(torch.tensor([0.5, -0.25]))
    x = torch.rand(1, 1, 32, 40)
    pred = fam.predict(nets, x, x, cfg)
    assert torch.allclose(pred.velocity[0, 0], torch.full((32, 40), 0.5), atol=1e-5)
    assert torch.allclose(pred.velocity[0, 1], torch.full((32, 40), -0.25), atol=1e-5)
    with (
        torch.no_grad()
    ):  # random head: the velocity has no energy above the band limit K / 2 cycles per image
        nets["head"].weight.normal_()
    spectrum = torch.fft.fft2(fam.predict(nets, x, x, cfg).velocity[0]).abs()
    fy, fx = torch.fft.fftfreq(32, 1 / 32).abs(), torch.fft.fftfreq(40, 1 / 40).abs()
    outside = (fy.view(-1, 1) > 4) | (fx.view(1, -1) > 4)
    assert float(spectrum[:, outside].max()) < 1e-3 * float(spectrum.max())
