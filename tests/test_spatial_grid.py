"""regcore.spatial.grid: the one voxel <-> grid_sample conversion, incl. the fused slab grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_random_field

from regcore.spatial.affine import affine_to_displacement
from regcore.spatial.grid import (
    affine_to_normalised,
    displacement_to_grid,
    displacement_to_slab_grid,
    grid_to_displacement,
    identity_grid,
    voxel_scale,
)


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 4)])
def test_identity_displacement_gives_affine_grid_identity(shape):
    n = len(shape)
    u = torch.zeros(1, n, *shape)
    theta = torch.cat([torch.eye(n), torch.zeros(n, 1)], 1)[None]
    expected = F.affine_grid(theta, (1, 1, *shape), align_corners=True)
    assert torch.allclose(displacement_to_grid(u), expected, atol=1e-6)
    assert torch.allclose(displacement_to_slab_grid(u), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 4)])
def test_grid_round_trip(shape):
    u = smooth_random_field(shape, 2.0, sigma=1.5)
    assert torch.allclose(grid_to_displacement(displacement_to_grid(u)), u, atol=1e-5)


def test_voxel_scale_and_identity_grid():
    assert torch.allclose(voxel_scale((5, 3)), torch.tensor([0.5, 1.0]))
    g = identity_grid((2, 3))
    assert g.shape == (1, 2, 2, 3) and g[0, 0, 1, 2] == 1 and g[0, 1, 1, 2] == 2


@pytest.mark.parametrize("shape", [(10, 7, 5), (9, 6), (1, 4, 4)])
@pytest.mark.parametrize("slabs", [1, 2, 3, 4, 16])
def test_slab_grid_matches_reference(shape, slabs):
    n = len(shape)
    u = torch.randn(2, n, *shape, dtype=torch.float64)
    grid = displacement_to_slab_grid(u, slabs)
    k = grid.shape[0] // 2
    dk = grid.shape[1]
    assert k * dk >= shape[0] > (k - 1) * dk
    stacked = grid.reshape(2, k * dk, *shape[1:], n)[:, : shape[0]]
    assert torch.allclose(stacked, displacement_to_grid(u), atol=1e-12)


@pytest.mark.parametrize("shape,slabs", [((5, 3, 2), 2), ((7, 3), 3), ((4, 2, 3), 1)])
def test_slab_grid_gradcheck(shape, slabs):
    u = torch.randn(2, len(shape), *shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: displacement_to_slab_grid(t, slabs), (u,))


def test_slab_grid_bad_input():
    with pytest.raises(ValueError, match="slabs must be a positive int"):
        displacement_to_slab_grid(torch.zeros(1, 2, 4, 4), 0)
    with pytest.raises(ValueError, match=r"\(B, ndim, \*S\)"):
        displacement_to_slab_grid(torch.zeros(1, 3, 4, 4), 1)
    with pytest.raises(TypeError, match="floating"):
        displacement_to_slab_grid(torch.zeros(1, 2, 4, 4, dtype=torch.int64), 1)


@pytest.mark.parametrize("shape", [(8, 11), (6, 7, 9)])
def test_affine_to_normalised_matches_affine_to_displacement(shape):
    """affine_grid(theta) and the voxel-space dense field of the same matrix must agree."""
    n = len(shape)
    g = torch.Generator().manual_seed(1)
    a = torch.eye(n) + 0.1 * torch.randn(n, n, generator=g)
    t = torch.randn(n, 1, generator=g)
    matrix = torch.cat([a, t], 1)[None]
    theta = affine_to_normalised(matrix, shape)
    grid = F.affine_grid(theta, (1, 1, *shape), align_corners=True)
    assert torch.allclose(grid_to_displacement(grid), affine_to_displacement(matrix, shape), atol=1e-4)
