"""regcore.nets: backbones and input preparation (resize/pad/normalise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import zoom

from regcore.nets.affine_head import AffineHead, normalised_to_voxel_affine
from regcore.nets.inputs import field_to_image_grid, normalise_intensity, plan_model_grid, to_model_grid
from regcore.nets.spatial_ops import integrate_svf, resize_field, resize_image
from regcore.nets.swin import SwinFlowNet
from regcore.nets.unet import FlowUNet
from regcore.spatial.grid import affine_to_normalised


@pytest.mark.parametrize("dims,shape", [(2, (32, 48)), (3, (16, 16, 32))])
@pytest.mark.parametrize("net_cls", [FlowUNet, SwinFlowNet])
def test_dense_backbones_output_near_zero_field(net_cls, dims, shape):
    torch.manual_seed(0)
    kw = {"channels": (8, 8, 8, 8)} if net_cls is FlowUNet else {"embed_dim": 12}
    if net_cls is SwinFlowNet and dims == 3:
        shape = (32, 32, 32)
    net = net_cls(dims, **kw)
    out = net(torch.rand(2, 2, *shape))
    assert out.shape == (2, dims, *shape)
    assert out.abs().max() < 1e-2  # near-identity at initialisation


def test_affine_head_starts_at_identity():
    net = AffineHead(2)
    a = net(torch.rand(3, 2, 40, 56))
    assert torch.allclose(a, torch.eye(2, 3).expand(3, 2, 3), atol=1e-6)


def test_normalised_to_voxel_affine_matches_grid_module():
    """Round trip through regcore.spatial.grid.affine_to_normalised (the one conversion owner)."""
    g = torch.Generator().manual_seed(1)
    shape = (20, 33)
    theta = torch.eye(2, 3)[None] + 0.1 * torch.randn(1, 2, 3, generator=g)  # tensor-axis order
    voxel = normalised_to_voxel_affine(theta, shape)
    back = affine_to_normalised(voxel, shape)  # xyz order
    expected = torch.cat([theta[:, :, :2].flip(-1).flip(-2), theta[:, :, 2:].flip(-2)], -1)
    assert torch.allclose(back, expected, atol=1e-5)


def test_integrate_svf_small_velocity_is_nearly_itself(tmp_path):
    v = 0.05 * torch.ones(1, 2, 16, 16)
    assert torch.allclose(integrate_svf(v), v, atol=1e-4)  # a constant velocity integrates to itself


def test_resize_image_matches_scipy_zoom():
    """Corner-aligned linear resampling == scipy.ndimage.zoom(order=1, grid_mode=False)."""
    rng = np.random.default_rng(0)
    a = rng.random((17, 23)).astype(np.float32)
    ours = resize_image(torch.from_numpy(a)[None, None], (33, 12))[0, 0].numpy()
    ref = zoom(a, (33 / 17, 12 / 23), order=1, grid_mode=False, mode="nearest")
    assert ref.shape == (33, 12)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_resize_field_rescales_voxel_units():
    u = torch.zeros(1, 2, 11, 21)
    u[:, 0], u[:, 1] = 1.0, -2.0  # constant shift in model voxels
    big = resize_field(u, (21, 41))  # twice the resolution (corner aligned)
    assert torch.allclose(big[:, 0], torch.full_like(big[:, 0], 2.0))
    assert torch.allclose(big[:, 1], torch.full_like(big[:, 1], -4.0))


def test_model_grid_round_trip_and_centring():
    grid = plan_model_grid((160, 224), (1.0, 1.0), 2.0, 16)
    assert grid.resized_shape == (80, 112) and grid.padded_shape == (80, 112)
    grid = plan_model_grid((50, 70), (1.0, 1.0), None, 16)
    assert grid.padded_shape == (64, 80) and grid.offsets == (7, 5)
    x = torch.arange(50 * 70, dtype=torch.float32).view(1, 1, 50, 70)
    padded = to_model_grid(x, grid)
    assert padded.shape == (1, 1, 64, 80)
    crop = field_to_image_grid(padded.expand(1, 2, 64, 80), grid)
    assert torch.equal(crop[:, :1], x)
    with pytest.raises(ValueError, match="planned image shape"):
        to_model_grid(torch.zeros(1, 1, 10, 10), grid)


def test_normalise_intensity_range_and_errors():
    x = torch.randn(2, 1, 20, 20) * 50 + 300
    y = normalise_intensity(x)
    assert y.min() == 0 and y.max() == 1
    with pytest.raises(ValueError, match="x must be"):
        normalise_intensity(torch.zeros(5))
