"""Reorientation between an image's voxel axes and a network's training orientation (regcore.nets.orientation)."""

import itertools

import numpy as np
import pytest
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

from regcore.nets.orientation import axis_map
from regcore.spatial.affine import affine_to_displacement
from regcore.spatial.warp import warp

LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
SOURCES = ("LIA", "RAS", "LPS", "ASL", "PIR")


@pytest.mark.parametrize("source", SOURCES)
def test_image_matches_nibabel_and_map_back_inverts_it(source):
    x = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    amap = axis_map(source, "RAS")
    got = amap.image(torch.from_numpy(x)[None, None])[0, 0].numpy()
    expected = apply_orientation(x, ornt_transform(axcodes2ornt(source, LABELS), axcodes2ornt("RAS", LABELS)))
    np.testing.assert_array_equal(got, expected)
    back = amap.map_back(torch.from_numpy(got)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(back, x)
    assert amap.spacing((1.0, 2.0, 3.0)) == tuple((1.0, 2.0, 3.0)[p] for p in amap.perm)


@pytest.mark.parametrize("source", SOURCES)
def test_a_field_predicted_on_the_reoriented_grid_warps_the_same_way_on_the_source_grid(source):
    gen = torch.Generator().manual_seed(1)
    moving = torch.rand(1, 1, 6, 7, 8, generator=gen)
    amap = axis_map(source, "RAS")
    moving_t = amap.image(moving)
    u_t = 1.5 * torch.randn(1, 3, *moving_t.shape[2:], generator=gen)
    u_s = amap.field_back(u_t)
    torch.testing.assert_close(amap.image(warp(moving, u_s)), warp(moving_t, u_t), atol=1e-5, rtol=1e-5)
    var_s = amap.field_back(u_t.abs(), signed=False)
    assert torch.all(var_s >= 0)


def test_an_affine_between_reoriented_grids_maps_back_to_the_same_displacement():
    amap = axis_map("LIA", "RAS")
    source_shape = (6, 7, 8)
    target_shape = tuple(source_shape[p] for p in amap.perm)
    a_t = torch.tensor([[1.0, 0.1, 0.0, 0.5], [0.0, 0.9, 0.05, -1.0], [0.02, 0.0, 1.1, 0.3]])
    u_t = affine_to_displacement(a_t[None], target_shape)
    u_s = affine_to_displacement(amap.affine_back(a_t, source_shape)[None], source_shape)
    torch.testing.assert_close(u_s, amap.field_back(u_t), atol=1e-5, rtol=1e-5)


def test_identity_and_bad_codes():
    assert axis_map("RAS", "RAS").is_identity and not axis_map("LIA", "RAS").is_identity
    for a, b in itertools.permutations(("RAS", "SAR", "LPI"), 2):
        assert axis_map(b, a) is not None
    with pytest.raises(ValueError, match="source orientation"):
        axis_map("RAX", "RAS")
    with pytest.raises(ValueError, match="source orientation"):
        axis_map("RRS", "RAS")
    with pytest.raises(ValueError, match="same anatomical axes"):
        axis_map("RA", "RS")
    with pytest.raises(ValueError, match="spatial axes"):
        axis_map("RAS", "LIA").image(torch.zeros(1, 1, 4, 4))


def _geometry(codes: str, shape, spacing=2.0):
    from regcore.image import Geometry

    columns = {
        "L": (1, 0, 0),
        "R": (-1, 0, 0),
        "P": (0, 1, 0),
        "A": (0, -1, 0),
        "S": (0, 0, 1),
        "I": (0, 0, -1),
    }
    direction = np.array([columns[c] for c in codes], dtype=float).T  # column i: where axis i points (LPS)
    return Geometry(tuple(shape), (spacing,) * 3, (0.0, 0.0, 0.0), tuple(map(tuple, direction)))


@pytest.mark.parametrize("recorded", [True, False])
def test_a_3d_model_sees_its_training_orientation_whatever_the_file_order(tmp_path, recorded):
    """A checkpoint trained on RAS volumes registers the same volumes stored LIA to the same field (mapped
    back to LIA voxels); without the recorded orientation the network would see transposed anatomy."""
    from regcore.image import Image
    from regcore.methods import registry
    from regcore.methods.learned.family import get_family
    from regcore.train.checkpoint import save_checkpoint

    fam = get_family("voxelmorph")
    torch.manual_seed(0)
    nets = fam.build(3, fam.make_config({"channels": [4, 4, 8, 8]}))
    with torch.no_grad():
        for p in nets.parameters():
            p.add_(0.05 * torch.randn_like(p))
    payload = {"family": fam.name, "dims": 3, "family_config": {"channels": [4, 4, 8, 8]}, "spacing_mm": 2.0}
    ckpt = save_checkpoint(
        tmp_path / "v.pt",
        {**payload, "state_dict": nets.state_dict(), **({"orientation": "RAS"} if recorded else {})},
    )
    gen = torch.Generator().manual_seed(2)
    fixed_ras, moving_ras = (torch.rand(1, 8, 12, 16, generator=gen) for _ in range(2))
    to_lia = axis_map("RAS", "LIA")
    images = {}
    for codes, (f, m) in {
        "RAS": (fixed_ras, moving_ras),
        "LIA": (to_lia.image(fixed_ras[None])[0], to_lia.image(moving_ras[None])[0]),
    }.items():
        geom = _geometry(codes, f.shape[1:])
        images[codes] = (Image(f, geom), Image(m, geom))
    assert images["LIA"][0].geometry.orientation_codes() == "LIA"
    spec = registry.get("voxelmorph")
    config = spec.make_config({"checkpoint": str(ckpt)})
    u = {codes: spec.factory().register(f, m, config).displacement for codes, (f, m) in images.items()}
    lia_as_ras = axis_map("LIA", "RAS").field_back(u["RAS"])  # the RAS answer in LIA voxels
    same = torch.allclose(u["LIA"], lia_as_ras, atol=1e-4)
    assert same == recorded, float((u["LIA"] - lia_as_ras).abs().max())
