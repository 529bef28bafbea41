"""regcore.spatial.warp: identity, exact shifts, slab fast path == grid_sample, autograd,
labels, SimpleITK / scipy cross-checks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from conftest import smooth_random_field
from scipy.ndimage import map_coordinates

from regcore.spatial.grid import displacement_to_grid
from regcore.spatial.warp import choose_slabs, warp, warp_labels


def _reference(moving, u, mode="bilinear", padding="border"):
    return F.grid_sample(moving, displacement_to_grid(u), mode=mode, padding_mode=padding, align_corners=True)


@pytest.mark.parametrize("shape", [(12, 13), (9, 10, 11)])
def test_identity_returns_input(shape):
    x = torch.rand(2, 3, *shape)
    u = torch.zeros(1, len(shape), *shape)
    assert torch.allclose(warp(x, u), x, atol=1e-6)


def test_integer_translation_shifts_exactly():
    x = torch.rand(1, 1, 10, 12, 14, generator=torch.Generator().manual_seed(0))
    u = torch.zeros(1, 3, 10, 12, 14)
    u[:, 0], u[:, 2] = 2.0, -3.0  # phi(x) = x + (2, 0, -3): warped[i, j, k] = moving[i+2, j, k-3]
    out = warp(x, u, padding_mode="zeros")
    # float32 normalised coordinates round off at ~1e-7 * size: allow 1e-5
    assert torch.allclose(out[0, 0, :-2, :, 3:], x[0, 0, 2:, :, :-3], atol=1e-5)
    assert out[0, 0, -2:].abs().max() < 1e-6 and out[0, 0, :, :, :3].abs().max() < 1e-6


@pytest.mark.parametrize("shape", [(37, 20, 21), (64, 50)])
@pytest.mark.parametrize("slabs", [1, 2, 3, 5, None])
@pytest.mark.parametrize("padding", ["border", "zeros", "reflection"])
def test_slab_fast_path_equals_grid_sample(shape, slabs, padding):
    x = torch.rand(1, 2, *shape)
    u = smooth_random_field(shape, 4.0, sigma=2.0)
    out = warp(x, u, padding_mode=padding, slabs=slabs)
    assert out.shape == x.shape
    assert (out - _reference(x, u, padding=padding)).abs().max() < 1e-5


def test_slab_fast_path_gradients_match_grid_sample():
    shape = (21, 16, 17)
    x = torch.rand(1, 2, *shape)
    u = smooth_random_field(shape, 3.0, sigma=2.0)
    grads = []
    for fn in (lambda m, d: warp(m, d, slabs=4), _reference):
        m, d = x.clone().requires_grad_(), u.clone().requires_grad_()
        (fn(m, d) * torch.linspace(0, 1, shape[-1])).square().sum().backward()
        grads.append((m.grad, d.grad))
    for a, b in zip(*grads):
        assert (a - b).abs().max() < 1e-4 * max(1.0, b.abs().max().item())


def test_gradcheck_float64_2d_and_3d():
    g = torch.Generator().manual_seed(0)
    for shape, slabs in (((5, 4), 2), ((4, 3, 3), 3)):
        x = torch.rand(1, 1, *shape, dtype=torch.float64, generator=g).requires_grad_()
        u = (0.7 * torch.randn(1, len(shape), *shape, dtype=torch.float64, generator=g)).requires_grad_()
        assert torch.autograd.gradcheck(lambda m, d: warp(m, d, slabs=slabs), (x, u), fast_mode=True)


def test_reused_inference_buffer_across_grad_modes():
    """The cached no-grad grid buffer must not leak between inference_mode, no_grad and autograd."""
    shape = (16, 9, 8)
    x = torch.rand(1, 1, *shape)
    u = smooth_random_field(shape, 2.0, sigma=2.0)
    ref = _reference(x, u)
    with torch.inference_mode():
        a = warp(x, u, slabs=2)
    with torch.no_grad():
        b = warp(x, u, slabs=2)
        c = warp(x, -u, slabs=2)  # reuses the buffer: b must not change
    d = u.clone().requires_grad_()
    e = warp(x, d, slabs=2)
    e.sum().backward()
    for out in (a, b, e):
        assert (out - ref).abs().max() < 1e-5
    assert (c - _reference(x, -u)).abs().max() < 1e-5 and d.grad is not None


def test_batch_broadcast_both_ways():
    shape = (10, 9, 8)
    x = torch.rand(2, 1, *shape)
    u = smooth_random_field(shape, 2.0, sigma=2.0)
    u2 = torch.cat([u, -u])
    assert torch.allclose(warp(x, u, slabs=2), torch.cat([warp(x[:1], u), warp(x[1:], u)]), atol=1e-6)
    assert torch.allclose(warp(x[:1], u2, slabs=3), torch.cat([warp(x[:1], u), warp(x[:1], -u)]), atol=1e-6)


def test_choose_slabs_uses_threads_only_for_large_cpu_volumes():
    big = torch.zeros(1, 3, 64, 64, 64)
    expected = min(torch.get_num_threads(), 64**3 // 65536)
    assert choose_slabs(big[:, :1], big) == max(1, expected)
    assert choose_slabs(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8)) == 1


def test_warp_labels_keeps_dtype_and_label_set():
    shape = (30, 31, 12)
    labels = torch.randint(0, 5, (1, 1, *shape), dtype=torch.uint8)
    u = smooth_random_field(shape, 3.0, sigma=3.0)
    out = warp_labels(labels, u)
    assert out.dtype == torch.uint8 and out.shape == labels.shape
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())
    ref = _reference(labels.float(), u, mode="nearest", padding="zeros")
    assert torch.equal(out.float(), ref)


def test_small_integer_codes_are_warped_directly_and_huge_ones_through_compact_indices(monkeypatch):
    """uint8/int64 maps with codes below 2**24 take one nearest warp; codes beyond float32's exact integers
    are compacted first and still come back exactly."""
    shape = (12, 14, 10)
    u = smooth_random_field(shape, 2.0, sigma=2.0)
    small = torch.randint(0, 250, (1, 1, *shape), dtype=torch.uint8)
    calls = []
    real_unique = torch.unique
    monkeypatch.setattr(torch, "unique", lambda *a, **k: calls.append(1) or real_unique(*a, **k))
    out = warp_labels(small, u)
    assert calls == [] and torch.equal(out.long(), warp_labels(small.long(), u))
    huge = small.long() * (2**30)
    assert torch.equal(warp_labels(huge, u), out.long() * (2**30)) and calls


def test_matches_scipy_map_coordinates_2d():
    shape = (40, 33)
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    u = smooth_random_field(shape, 3.0, sigma=3.0).double()
    coords = np.indices(shape) + u[0].numpy()
    expected = map_coordinates(x[0, 0].numpy(), coords, order=1, mode="nearest")
    assert np.abs(warp(x, u)[0, 0].numpy() - expected).max() < 1e-10


def test_matches_simpleitk_displacement_field_resample_3d():
    """SimpleITK, same field in mm (spacing != 1); interior voxels agree."""
    shape = (18, 20, 16)
    spacing = (1.5, 1.0, 2.0)  # per tensor axis
    x = torch.rand(1, 1, *shape)
    u = smooth_random_field(shape, 2.0, sigma=3.0)
    image = sitk.GetImageFromArray(x[0, 0].numpy())  # tensor axes become sitk (z, y, x) index order reversed
    image.SetSpacing(spacing[::-1])
    mm = (u[0] * torch.tensor(spacing).view(3, 1, 1, 1)).numpy()  # component i along tensor axis i, mm
    field = sitk.GetImageFromArray(np.moveaxis(mm[::-1], 0, -1).astype(np.float64), isVector=True)
    field.CopyInformation(image)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    resampled = sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0)
    expected = torch.from_numpy(sitk.GetArrayFromImage(resampled))
    ours = warp(x, u, padding_mode="zeros")[0, 0]
    inner = (slice(3, -3),) * 3
    assert (ours[inner] - expected[inner]).abs().max() < 1e-4


def test_real_brain_slice_translation(shared_data):
    import nibabel as nib

    img = nib.load(shared_data / "brain2d/images/OASIS_OAS1_0455_MR1_axial103.nii.gz").get_fdata()
    x = torch.tensor(np.squeeze(img), dtype=torch.float32)[None, None]
    u = torch.zeros(1, 2, *x.shape[2:])
    u[:, 1] = 5.0
    out = warp(x, u, padding_mode="zeros")
    assert torch.allclose(out[..., :-5], x[..., 5:], atol=1e-4 * x.abs().max().item())


def test_real_brain_volume_fast_path_matches_grid_sample(shared_data):
    import nibabel as nib

    arr = np.asarray(
        nib.load(shared_data / "brain3d/images/OASIS_OAS1_0455_MR1.nii.gz").dataobj, dtype=np.float32
    )
    x = torch.from_numpy(arr[32:128, 48:144, 64:160].copy())[None, None]  # 96^3 crop through the brain
    u = smooth_random_field(tuple(x.shape[2:]), 4.0, seed=11, sigma=6.0)
    with torch.no_grad():
        ours = warp(x, u, slabs=2)
        ref = _reference(x, u)
    assert x.std() > 0.1 and (ours - ref).abs().max() < 1e-4


def test_bad_input_messages():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="share the spatial shape"):
        warp(x, torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, ndim, \*S\)"):
        warp(x, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="mode must be one of"):
        warp(x, torch.zeros(1, 2, 8, 8), mode="cubic")
    with pytest.raises(ValueError, match="padding_mode"):
        warp(x, torch.zeros(1, 2, 8, 8), padding_mode="wrap")
    with pytest.raises(ValueError, match="batch sizes"):
        warp(torch.rand(2, 1, 8, 8), torch.zeros(3, 2, 8, 8))
    with pytest.raises(TypeError, match="moving must be a torch.Tensor"):
        warp(np.zeros((1, 1, 8, 8)), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="slabs"):
        warp(x, torch.zeros(1, 2, 8, 8), slabs=0)
