"""A user's own folder or manifest -> Pairs; bad files are reported by name, the rest loads."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from regcore.data import FolderDataset, load_folder, load_manifest, load_pair


def _nifti(path: Path, array: np.ndarray, spacing=1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([spacing] * 3 + [1.0])), str(path))
    return path


def _image(shape, seed):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _labels(shape):
    lab = np.zeros(shape, dtype=np.uint8)
    lab[2:6, 2:6] = 1
    lab[7:, 7:] = 2
    return lab


@pytest.fixture
def user_folder(tmp_path) -> Path:
    shape = (12, 10, 8)
    for stem, seed in (("a", 0), ("b", 1), ("T2", 2), ("T2_crop", 3)):
        _nifti(tmp_path / "images" / f"{stem}.nii.gz", _image(shape, seed))
    (tmp_path / "images" / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not a nifti")
    _nifti(tmp_path / "labels" / "a_seg.nii.gz", _labels(shape))
    _nifti(tmp_path / "labels" / "b.nii.gz", _labels(shape))  # same stem
    _nifti(tmp_path / "labels" / "T2_crop_cordseg.nii.gz", _labels(shape))  # -> T2_crop (longest stem)
    _nifti(tmp_path / "labels" / "T2_gmseg.nii.gz", _labels(shape))  # -> T2
    _nifti(tmp_path / "labels" / "T2_zz_seg.nii.gz", _labels(shape))  # -> T2, an alternative
    _nifti(tmp_path / "labels" / "orphan_seg.nii.gz", _labels(shape))  # matches no image: ignored
    lm = tmp_path / "landmarks"
    lm.mkdir()
    (lm / "a.csv").write_text("id,x,y,z\n1,-1.0,-2.0,3.0\n2,-4.0,-5.0,6.0\n", encoding="utf-8")
    (lm / "b_user1.csv").write_text("id,x,y,z\n1,-1.5,-2.0,3.0\n2,-4.5,-5.0,6.5\n", encoding="utf-8")
    (lm / "b_user2.csv").write_text("id,x,y,z\n1,-1.4,-2.1,3.0\n2,-4.4,-5.1,6.4\n", encoding="utf-8")
    (lm / "T2_bad.csv").write_text("id,x,y,z\n1,one,2,3\n", encoding="utf-8")
    (tmp_path / "label_names.csv").write_text("value,name\n1,cortex\n2,ventricle\n", encoding="utf-8")
    return tmp_path


def test_folder_loads_everything_but_the_corrupt_files(user_folder):
    ds = load_folder(user_folder)
    assert isinstance(ds, FolderDataset) and ds.stems == ["T2", "T2_crop", "a", "b"]
    assert len(ds.errors) == 2
    assert any("broken.nii.gz" in e for e in ds.errors)
    assert any("T2_bad.csv" in e and "non-numeric" in e for e in ds.errors)
    a, b = ds.subject("a"), ds.subject("b")
    assert a.labels.is_labels and a.labels.present_labels() == [1, 2]
    assert b.files["labels"].endswith("labels/b.nii.gz")
    assert len(a.landmarks) == 2 and b.files["landmarks"].endswith("b_user1.csv")
    assert b.alternatives["landmarks"][0].endswith("b_user2.csv")
    assert ds.subject("T2_crop").files["labels"].endswith("T2_crop_cordseg.nii.gz")
    assert ds.subject("T2").files["labels"].endswith("T2_gmseg.nii.gz")
    assert ds.subject("T2").alternatives["labels"][0].endswith("T2_zz_seg.nii.gz")
    assert ds.label_names == {1: "cortex", 2: "ventricle"}


def test_folder_pairs(user_folder):
    ds = load_folder(user_folder)
    assert len(ds.pairs()) == 6 and len(ds.pairs("consecutive")) == 3 and len(ds.pairs("to_first")) == 3
    pair = ds.pair("a", "b")
    assert pair.name == "a <- b" and pair.true_displacement is None and not pair.has_ground_truth
    assert pair.label_names == {1: "cortex", 2: "ventricle"}
    assert pair.fixed_labels.label_names == pair.label_names
    fa, mb, ids = pair.fixed_landmarks.matched(pair.moving_landmarks)
    assert ids == ["1", "2"] and np.allclose(fa[0], [-1.0, -2.0, 3.0])
    with pytest.raises(ValueError, match="strategy must be one of"):
        ds.pairs("random")
    with pytest.raises(ValueError, match="no subject 'zz'"):
        ds.pair("zz", "a")


def test_folder_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_folder(tmp_path / "missing")
    (tmp_path / "pairs.csv").write_text("fixed,moving\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"has no images/ folder.*pairs.csv"):
        load_folder(tmp_path)
    (tmp_path / "images").mkdir()
    assert "no image files" in load_folder(tmp_path).errors[0]


def test_manifest_resolves_relative_paths_and_reports_bad_rows(user_folder):
    csv = user_folder / "pairs.csv"
    csv.write_text(
        "name,fixed,moving,fixed_labels,moving_labels,fixed_landmarks,moving_landmarks,label_names\n"
        "ab,images/a.nii.gz,images/b.nii.gz,labels/a_seg.nii.gz,labels/b.nii.gz,landmarks/a.csv,landmarks/b_user1.csv,label_names.csv\n"
        ",images/T2.nii.gz,images/T2_crop.nii.gz,,,,,\n"
        "bad,images/a.nii.gz,images/missing.nii.gz,,,,,\n",
        encoding="utf-8",
    )
    ds = load_manifest(csv)
    assert [p.name for p in ds.pairs()] == ["ab", "T2 <- T2_crop"]
    assert len(ds.errors) == 1 and "line 4" in ds.errors[0] and "missing.nii.gz" in ds.errors[0]
    ab = ds.pairs()[0]
    assert ab.label_names == {1: "cortex", 2: "ventricle"} and len(ab.moving_landmarks) == 2
    assert load_folder(csv).pairs()[0].name == "ab"  # load_folder accepts a manifest too
    (user_folder / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a header with at least 'fixed,moving'"):
        load_manifest(user_folder / "bad.csv")
    with pytest.raises(ValueError, match="must be an existing CSV file"):
        load_manifest(user_folder / "nope.csv")


def test_load_pair_checks_label_shape(user_folder, tmp_path):
    small = _nifti(tmp_path / "small_seg.nii.gz", np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="fixed_labels shape"):
        load_pair(user_folder / "images/a.nii.gz", user_folder / "images/b.nii.gz", fixed_labels=small)
    pair = load_pair(user_folder / "images/a.nii.gz", user_folder / "images/b.nii.gz")
    assert pair.fixed_labels is None and pair.label_names is None and pair.fixed.shape == (12, 10, 8)


# -- the real data in ../shared/data ------------------------------------------------------------------
@pytest.mark.shared_data
def test_shared_brain2d(shared_data):
    ds = load_folder(shared_data / "brain2d")
    assert ds.errors == [] and len(ds.subjects) == 4
    pair = ds.pair("OASIS_OAS1_0455_MR1_axial103", "OASIS_OAS1_0456_MR1_axial103")
    assert pair.ndim == 2 and pair.fixed.shape == (160, 224)
    assert pair.fixed_labels is not None and pair.moving_labels is not None and len(pair.label_names) >= 20


@pytest.mark.shared_data
def test_shared_brain3d(shared_data):
    ds = load_folder(shared_data / "brain3d")
    assert ds.errors == [] and len(ds.label_names) == 35
    pair = ds.pair(0, 1)
    assert pair.fixed.shape == (160, 192, 224) and pair.label_names[1] == "Left-Cerebral-White-Matter"
    assert set(pair.fixed_labels.present_labels()) <= set(pair.label_names)
    assert ds.subject("OASIS_htwin_moving").labels is None


@pytest.mark.shared_data
def test_shared_histology_landmarks(shared_data):
    ds = load_folder(shared_data / "histology2d")
    assert ds.errors == [] and len(ds.pairs()) == 1
    pair = ds.pairs()[0]
    fixed, moving, ids = pair.fixed_landmarks.matched(pair.moving_landmarks)
    assert len(ids) == 80
    identity_tre = np.linalg.norm(fixed - moving, axis=1).mean()
    assert 10 < identity_tre < 200  # "tens of pixels" per the data README
    assert all(len(s.alternatives["landmarks"]) == 1 for s in ds.subjects)  # the second annotator


@pytest.mark.shared_data
def test_shared_spine_multimodal(shared_data):
    ds = load_folder(shared_data / "spine_multimodal")
    assert ds.errors == [] and ds.stems == ["T1w", "T2star", "T2star_crop", "T2w"]
    assert ds.subject("T2star_crop").files["labels"].endswith("T2star_crop_cordseg.nii.gz")
    assert ds.subject("T2star").files["labels"].endswith("T2star_gmseg_manual.nii.gz")
    assert ds.subject("T2w").files["labels"].endswith("T2w_cordseg_manual.nii.gz")
    assert len(ds.subject("T2w").landmarks) >= 2 and ds.subject("T1w").landmarks is None
    assert len(ds.pairs()) == 6
