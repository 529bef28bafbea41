"""regcore.bias_field: N4 removes a known multiplicative field from a tissue phantom and leaves an unshaded one alone,
refuses what it cannot model, keeps its results by content and handles thick and single-slice grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_random_field

from regcore.bias_field import correct_bias
from regcore.image import Image


def tissue_phantom(shape: tuple[int, int] = (96, 80)) -> Image:
    """A 2D "head": background 0, an ellipse of three tissue classes (intensities 0.3, 0.6, 0.9) in blobs."""
    rows, cols = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    head = rows**2 / 0.8**2 + cols**2 / 0.75**2 < 1
    blobs = smooth_random_field(shape, magnitude=1.0, seed=3, sigma=4.0)[0, 0].numpy()
    tissue = np.where(blobs > 0.15, 0.9, np.where(blobs < -0.15, 0.3, 0.6))
    return Image.from_array((tissue * head).astype(np.float32), spacing=(2.0, 2.0), name="phantom")


def test_correct_bias_removes_a_known_multiplicative_field():
    """A three-class phantom times a smooth field (0.80-1.18 across the head, as MR coil shading): after N4 the
    tissue classes are flat again (the spread inside each class falls from 0.08-0.10 to under 0.004) and the level is
    kept; on the phantom without a field the correction changes next to nothing."""
    clean = tissue_phantom()
    c = clean.numpy()
    head = c > 0
    rows = np.linspace(-1, 1, c.shape[0])[:, None] * np.ones_like(c)
    cols = np.linspace(-1, 1, c.shape[1])[None, :] * np.ones_like(c)
    field = np.exp(0.2 * rows - 0.15 * cols + 0.1 * rows * cols)
    shaded = clean.with_data(torch.from_numpy((c * field).astype(np.float32))[None], name="shaded")

    def class_spread(image: Image) -> float:
        """Mean over the tissue classes of the intensity's coefficient of variation inside the class."""
        a = image.numpy()
        return float(np.mean([a[c == v].std() / a[c == v].mean() for v in (0.3, 0.6, 0.9)]))

    corrected = correct_bias(shaded)
    assert corrected.geometry == shaded.geometry and corrected.data.dtype == torch.float32
    assert class_spread(shaded) > 0.08  # the field is there to remove
    assert class_spread(corrected) < class_spread(shaded) / 4, (class_spread(shaded), class_spread(corrected))
    assert abs(np.log(corrected.numpy()[head]).mean() - np.log(shaded.numpy()[head]).mean()) < 0.01
    unchanged = correct_bias(clean).numpy()
    assert np.abs(unchanged[head] / c[head] - 1).max() < 0.02


def test_correct_bias_refuses_what_it_cannot_correct():
    ct = Image.from_array(np.full((40, 40), -1000.0, np.float32), name="ct.nii.gz")
    with pytest.raises(ValueError, match=r"non-negative intensities \(MR\), but 'ct.nii.gz' reaches -1000"):
        correct_bias(ct)
    with pytest.raises(ValueError, match="label map 'seg'"):
        correct_bias(Image.from_array(np.ones((8, 8), np.int16), is_labels=True, name="seg"))
    with pytest.raises(ValueError, match="iterations must be"):
        correct_bias(tissue_phantom(), iterations=())
    blank = Image.from_array(np.zeros((40, 40), np.float32))
    assert torch.equal(correct_bias(blank).data, blank.data)  # nothing to fit on: returned as it was


def test_correct_bias_corrects_an_image_it_has_seen_once(monkeypatch):
    """Results are kept by content: the same pixels and spacing again cost no N4 fit, and the caller gets its own
    copy (changing it does not change the next result); other pixels or another spacing are fitted anew."""
    from collections import OrderedDict

    import regcore.bias_field as bias

    monkeypatch.setattr(bias, "_bias_memo", OrderedDict())  # this test's own memo
    fits = []
    fit = bias._n4_log_field
    monkeypatch.setattr(bias, "_n4_log_field", lambda *a: fits.append(1) or fit(*a))
    image = tissue_phantom()
    image = image.with_data(image.data * torch.linspace(0.8, 1.2, image.shape[0])[None, :, None])
    first = correct_bias(image)
    first.data.mul_(0.0)  # the caller's copy
    again = correct_bias(image.with_data(image.data.clone()))
    assert len(fits) == 1 and float(again.data.max()) > 0
    np.testing.assert_array_equal(again.numpy(), correct_bias(image).numpy())
    correct_bias(Image.from_array(image.numpy(), spacing=(1.0, 1.0)))  # same pixels, other spacing
    correct_bias(image.with_data(image.data * 1.01))
    assert len(fits) == 3


def test_the_bias_fit_shrinks_every_axis_alike_but_keeps_a_short_slice_axis_whole():
    """One factor of up to 4 on every axis that keeps 32 voxels; a thick-slice axis too short to shrink is kept whole
    (1 x 1 x 5 mm OASIS: 44 slices) instead of holding the in-plane axes at full size (then ~8x slower)."""
    from regcore.bias_field import _bias_shrink

    assert _bias_shrink((80, 96)) == [2, 2]  # the built-in 2D sample
    assert _bias_shrink((160, 192, 224)) == [4, 4, 4]  # a 1 mm brain
    assert _bias_shrink((160, 192, 44)) == [4, 4, 1]  # the same brain at 5 mm slices
    assert _bias_shrink((49, 54, 9)) == [1, 1, 1] and _bias_shrink((3, 3)) == [1, 1]


def test_correct_bias_fits_a_single_slice_volume_as_the_2d_slice_it_is():
    """N4 cannot fit along an axis one voxel long: a (H, W, 1) volume gets exactly its 2D slice's correction."""
    flat = tissue_phantom()
    a = flat.numpy() * np.linspace(0.8, 1.2, flat.shape[0], dtype=np.float32)[:, None]
    plane = Image.from_array(a, spacing=(2.0, 2.0))
    volume = Image.from_array(a[:, :, None], spacing=(2.0, 2.0, 5.0))
    np.testing.assert_array_equal(correct_bias(volume).numpy()[:, :, 0], correct_bias(plane).numpy())
    line = Image.from_array(np.linspace(1.0, 2.0, 40, dtype=np.float32)[None, :])
    assert torch.equal(correct_bias(line).data, line.data)
