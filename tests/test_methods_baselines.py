"""Library baselines: SimpleITK transform/field conversion (analytic), each sitk method raises Dice
on a small 2D pair, elastix/ANTs raise MissingExtraError with the install command when absent
(and run when present)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import smooth_random_field
from scipy.ndimage import gaussian_filter

from regcore.image import Geometry, Image
from regcore.methods.classical.library_convert import to_sitk, transform_to_voxel_displacement
from regcore.methods.registry import MissingExtraError, get
from regcore.spatial.warp import warp, warp_labels


def labelled_pair(size: int = 64, magnitude: float = 3.0):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int64)
    for k in range(1, 6):
        cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
        labels[np.hypot(yy - cy, xx - cx) < rng.uniform(0.08, 0.18) * size] = k
    img = gaussian_filter(labels * 0.15, 1.0) + 0.3 * gaussian_filter(rng.standard_normal((size, size)), 2.0)
    u = smooth_random_field((size, size), magnitude, seed=5, sigma=size / 10)
    u[:, 0] += 1.5  # plus a translation so the affine baseline has something to find
    moving = torch.tensor(img, dtype=torch.float32)[None, None]
    mlab = torch.tensor(labels)[None, None]
    return (
        Image.from_array(warp(moving, u)[0, 0]),
        Image.from_array(moving[0, 0]),
        warp_labels(mlab, u)[0, 0],
        mlab[0, 0],
    )


def dice_mean(a, b) -> float:
    ks = [k for k in torch.unique(a).tolist() if k]
    return float(
        np.mean([2 * float(((a == k) & (b == k)).sum()) / float((a == k).sum() + (b == k).sum()) for k in ks])
    )


def test_translation_converts_to_voxels_with_spacing_and_direction():
    geom = Geometry((20, 30), (2.0, 0.5), (10.0, -4.0), ((0.0, 1.0), (1.0, 0.0)))  # axes swapped
    ref = to_sitk(Image.from_array(torch.zeros(20, 30), geom))
    assert ref.GetSize() == (20, 30)
    u = transform_to_voxel_displacement(sitk.TranslationTransform(2, (3.0, -1.0)), ref)
    # world shift (3, -1) mm: axis 0 points along world y (spacing 2), axis 1 along world x (spacing 0.5)
    torch.testing.assert_close(u[0, 0], torch.full((20, 30), -0.5))
    torch.testing.assert_close(u[0, 1], torch.full((20, 30), 6.0))


def test_to_sitk_keeps_voxels_and_geometry():
    geom = Geometry((5, 7, 3), (1.0, 2.0, 3.0), (1.0, 2.0, 3.0), tuple(map(tuple, np.eye(3))))
    data = torch.arange(105, dtype=torch.float32).reshape(5, 7, 3)
    img = to_sitk(Image.from_array(data, geom))
    assert img.GetPixel(4, 6, 2) == float(data[4, 6, 2])
    assert img.TransformIndexToPhysicalPoint((1, 1, 1)) == (2.0, 4.0, 6.0)


@pytest.mark.parametrize(
    "method,overrides",
    [
        ("sitk_affine_mi", {"iterations": 60}),
        ("sitk_bspline", {"iterations": 30, "grid_spacing_mm": 12.0, "metric": "mean_squares"}),
        ("sitk_demons", {"iterations": 30}),
    ],
)
def test_sitk_methods_raise_dice(method, overrides):
    fixed, moving, flab, mlab = labelled_pair()
    spec = get(method)
    res = spec.factory().register(fixed, moving, spec.make_config(overrides))
    assert res.displacement.shape == (1, 2, 64, 64)
    warped_lab = warp_labels(mlab[None, None], res.displacement)[0, 0]
    assert dice_mean(flab, warped_lab) > dice_mean(flab, mlab) + 0.03
    if method == "sitk_affine_mi":
        assert res.affine is not None and res.affine.shape == (2, 3)


def test_sitk_affine_matrix_matches_its_field():
    from regcore.spatial.grid import identity_grid

    fixed, moving, *_ = labelled_pair(size=40)
    spec = get("sitk_affine_mi")
    res = spec.factory().register(fixed, moving, spec.make_config({"iterations": 20}))
    x = identity_grid((40, 40))[0].reshape(2, -1)
    mapped = res.affine[:, :2] @ x + res.affine[:, 2:]
    torch.testing.assert_close((mapped - x).reshape(1, 2, 40, 40), res.displacement, atol=1e-3, rtol=0)


def test_sitk_rejects_different_grids():
    fixed, moving, *_ = labelled_pair(size=32)
    with pytest.raises(ValueError, match="same grid"):
        get("sitk_demons").factory().register(
            fixed, Image.from_array(torch.zeros(8, 8)), get("sitk_demons").make_config()
        )


@pytest.mark.parametrize(
    "method,extra,hint", [("elastix", "elastix", "pip install"), ("ants_syn", "ants", "make bench-env")]
)
def test_missing_extra_message(monkeypatch, method, extra, hint):
    import regcore.extras as extras
    import regcore.methods.classical.elastix as elastix_mod

    monkeypatch.setattr(extras, "extra_available", lambda name: False)
    monkeypatch.setattr(elastix_mod, "elastix_installed", lambda: False)
    spec = get(method)
    assert spec.requires == extra and not spec.available()
    with pytest.raises(MissingExtraError, match=f"needs the optional extra '{extra}'.*{hint}"):
        spec.factory()
    from regcore.register import run_registration

    fixed, moving, *_ = labelled_pair(size=16)
    with pytest.raises(MissingExtraError, match=hint):
        run_registration(fixed, moving, method)


@pytest.mark.slow
@pytest.mark.parametrize("method,module", [("ants_syn", "ants"), ("elastix", "itk")])
def test_optional_baselines_raise_dice_when_installed(method, module):
    pytest.importorskip(module)
    if method == "elastix":
        from regcore.methods.classical.elastix import elastix_installed

        if not elastix_installed():
            pytest.skip("itk-elastix not installed")
    fixed, moving, flab, mlab = labelled_pair()
    spec = get(method)
    overrides = {"iterations": "20,10,0"} if method == "ants_syn" else {"iterations": 60, "resolutions": 2}
    res = spec.factory().register(fixed, moving, spec.make_config(overrides))
    warped_lab = warp_labels(mlab[None, None], res.displacement)[0, 0]
    assert dice_mean(flab, warped_lab) > dice_mean(flab, mlab) + 0.03
