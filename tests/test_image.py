"""regcore.image: Geometry, Image and Landmarks (construction, validation, conventions)."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regcore.image import Geometry, Image, Landmarks

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def signed_permutations(n: int):
    for perm in itertools.permutations(range(n)):
        for signs in itertools.product((1.0, -1.0), repeat=n):
            m = np.zeros((n, n))
            m[list(perm), range(n)] = signs
            yield m


def test_identity_and_from_matrix_round_trip():
    g = Geometry.identity((4, 5, 6), spacing=(1.0, 2.0, 0.5))
    np.testing.assert_allclose(g.index_to_world, np.diag([1.0, 2.0, 0.5, 1.0]))
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([0.7, 1.2, 3.0])
    m[:3, 3] = [10.0, -20.0, 5.0]
    h = Geometry.from_matrix((4, 5, 6), m)
    assert h.spacing == pytest.approx((0.7, 1.2, 3.0)) and h.origin == (10.0, -20.0, 5.0)
    np.testing.assert_allclose(h.direction_matrix, rot, atol=1e-12)
    np.testing.assert_allclose(h.index_to_world, m, atol=1e-12)
    assert h.same_grid(Geometry.from_matrix((4, 5, 6), h.index_to_world))
    assert not h.same_grid(h.with_shape((4, 5, 7)))
    assert h.extent_mm == pytest.approx((2.8, 6.0, 18.0))
    g2 = Geometry.identity((3, 8), 0.5)
    assert g2.ndim == 2 and g2.spacing == (0.5, 0.5)


def test_world_index_round_trip_matches_simpleitk():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    g = Geometry((7, 8, 9), (0.9, 1.1, 2.5), (3.0, -4.0, 12.0), tuple(map(tuple, q)))
    idx = rng.uniform(-2, 10, size=(20, 3))
    pts = g.index_to_world_points(idx)
    np.testing.assert_allclose(g.world_to_index_points(pts), idx, atol=1e-10)
    np.testing.assert_allclose(g.world_to_index @ g.index_to_world, np.eye(4), atol=1e-12)
    s = sitk.Image([7, 8, 9], sitk.sitkFloat32)
    s.SetSpacing(g.spacing)
    s.SetOrigin(g.origin)
    s.SetDirection(tuple(q.reshape(-1)))
    np.testing.assert_allclose(
        pts, [s.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in idx], atol=1e-9
    )


@pytest.mark.parametrize("n", [2, 3])
def test_orientation_codes_match_nibabel(n):
    """Our LPS direction -> RAS affine for nibabel: both name the direction each axis points to."""
    for d in signed_permutations(n):
        g = Geometry((3,) * n, (1.0,) * n, (0.0,) * n, tuple(map(tuple, d)))
        lps = np.eye(4)
        lps[:n, :n] = d
        expected = "".join(nib.aff2axcodes(RAS_TO_LPS @ lps))[:n]
        assert g.orientation_codes() == expected, d
    assert Geometry.identity((2, 2, 2)).orientation_codes() == "LPS"


def test_geometry_validation_errors():
    with pytest.raises(ValueError, match="2D or 3D grids, got shape"):
        Geometry.identity((5,))
    with pytest.raises(ValueError, match="must have 3 entries"):
        Geometry((2, 3, 4), (1.0, 1.0), (0.0, 0.0, 0.0), tuple(map(tuple, np.eye(3))))
    with pytest.raises(ValueError, match="spacing must be finite and > 0"):
        Geometry.identity((2, 3), (1.0, -1.0))
    with pytest.raises(ValueError, match="shape must be positive"):
        Geometry.identity((0, 3))
    with pytest.raises(ValueError, match=r"direction must be 2x2, got \(3, 3\)"):
        Geometry((2, 3), (1.0, 1.0), (0.0, 0.0), tuple(map(tuple, np.eye(3))))
    with pytest.raises(ValueError, match=r"index_to_world must be \(4, 4\)"):
        Geometry.from_matrix((2, 3, 4), np.eye(3))
    with pytest.raises(ValueError, match="zero-length axis"):
        Geometry.from_matrix((2, 3), np.diag([1.0, 0.0, 1.0]))


def test_image_construction_and_access():
    arr = np.arange(24, dtype=np.float64).reshape(4, 6)
    img = Image.from_array(arr, spacing=(2.0, 3.0), name="a")
    assert img.data.shape == (1, 4, 6) and img.data.dtype == torch.float32
    assert img.shape == (4, 6) and img.spacing == (2.0, 3.0) and img.ndim == 2
    np.testing.assert_array_equal(img.numpy(), arr)
    assert img.batch().shape == (1, 1, 4, 6)
    doubled = img.with_data(img.data * 2)
    assert doubled.geometry is img.geometry and doubled.name == "a" and float(doubled.data.max()) == 46.0
    labels = Image.from_array(np.array([[0, 3], [7, 3]]), is_labels=True, label_names={3: "x", 7: "y"})
    assert labels.data.dtype == torch.int64 and labels.present_labels() == [3, 7]
    assert "labels" in repr(labels) and "LP" in repr(labels)
    with pytest.raises(ValueError, match="is not a label map"):
        img.present_labels()
    assert img.to("cpu").device.type == "cpu"


def test_image_validation_errors():
    g = Geometry.identity((4, 5))
    with pytest.raises(TypeError, match="Image.data must be a torch.Tensor, got ndarray"):
        Image(np.zeros((1, 4, 5)), g)
    with pytest.raises(ValueError, match=r"must be \(C, \*S\) with 2 spatial dims"):
        Image(torch.zeros(4, 5), g)
    with pytest.raises(ValueError, match=r"spatial shape \(5, 4\) != geometry.shape \(4, 5\)"):
        Image(torch.zeros(1, 5, 4), g)
    with pytest.raises(ValueError, match="array must be 2D or 3D"):
        Image.from_array(np.zeros((2, 3, 4, 5)))


def test_landmarks():
    a = Landmarks(np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]), (1, "b", "c"))
    b = Landmarks(np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]), ("c", "1"))
    assert len(a) == 3 and a.ndim == 3 and a.ids == ("1", "b", "c")
    pa, pb, ids = a.matched(b)
    assert ids == ["1", "c"]
    np.testing.assert_array_equal(pa, [[0, 1, 2], [6, 7, 8]])
    np.testing.assert_array_equal(pb, [[2, 2, 2], [1, 1, 1]])
    with pytest.raises(ValueError, match="share no ids"):
        a.matched(Landmarks(np.zeros((1, 3)), ("zz",)))
    with pytest.raises(ValueError, match=r"must be \(N, 2\) or \(N, 3\)"):
        Landmarks(np.zeros((2, 4)), ("a", "b"))
    with pytest.raises(ValueError, match="has 2 points but 1 ids"):
        Landmarks(np.zeros((2, 3)), ("a",))
    with pytest.raises(ValueError, match="NaN or infinite"):
        Landmarks(np.array([[np.nan, 0.0]]), ("a",))
