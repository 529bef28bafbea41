"""The default deformable method of a pair (:mod:`regcore.methods.default_choice`): fireants in 3D, demons
between two contrasts in 3D and in 2D; and the Register page starting from it."""

from __future__ import annotations

import pytest
import torch
from scipy import ndimage

from regcore.image import Geometry, Image
from regcore.io import load_image
from regcore.methods.classical.contrast import MIND_BELOW
from regcore.methods.default_choice import BETWEEN_CONTRASTS_3D, default_deformable
from regcore.methods.registry import DEFAULT_DEFORMABLE

GEOM = Geometry(
    (28, 30, 26), (1.0, 1.2, 1.5), (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
)


def anatomy(seed: int = 0) -> torch.Tensor:
    """A smooth blob image in [0, 1] on GEOM (structures a few mm across)."""
    rng = torch.Generator().manual_seed(seed)
    noise = torch.rand(GEOM.shape, generator=rng).numpy()
    smooth = torch.from_numpy(ndimage.gaussian_filter(noise, 3.0)).float()
    return (smooth - smooth.min()) / (smooth.max() - smooth.min())


def test_same_contrast_in_3d_keeps_the_3d_default():
    body = anatomy()
    fixed = Image(body[None], GEOM)
    moving = Image(torch.roll(body, 2, dims=0)[None] * 3.0 + 0.5, GEOM)  # shifted, rescaled: one contrast
    choice = default_deformable(fixed, moving)
    assert choice.method == DEFAULT_DEFORMABLE[3] and choice.correlation >= MIND_BELOW and choice.reason == ""


def test_inverted_contrast_in_3d_gets_demons_with_a_reason():
    body = anatomy()
    choice = default_deformable(Image(body[None], GEOM), Image((1.0 - body)[None], GEOM))
    assert choice.method == BETWEEN_CONTRASTS_3D == "demons"
    assert choice.correlation < -0.9 and "r = -" in choice.reason and "demons compares MIND" in choice.reason


def test_2d_is_demons_whatever_the_contrasts_with_their_correlation_for_the_features_note():
    geometry = Geometry((40, 44), (1.0, 1.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
    body = torch.from_numpy(ndimage.gaussian_filter(torch.rand(40, 44).numpy(), 3.0)).float()
    body = (body - body.min()) / (body.max() - body.min())
    same = default_deformable(Image(body[None], geometry), Image(body[None], geometry))
    inverted = default_deformable(Image(body[None], geometry), Image((1.0 - body)[None], geometry))
    assert same.method == inverted.method == DEFAULT_DEFORMABLE[2]
    assert same.reason == inverted.reason == ""
    assert same.correlation > 0.99 and inverted.correlation < -0.99


def test_real_pairs(shared_data):
    """OASIS T1 <-> T1: fireants; MR -> TRUS prostate and spine T1w -> T2w: demons."""
    brain = shared_data / "brain3d" / "images"
    same = default_deformable(
        load_image(brain / "OASIS_OAS1_0455_MR1.nii.gz"), load_image(brain / "OASIS_OAS1_0456_MR1.nii.gz")
    )
    assert same.method == "fireants", same
    prostate = shared_data / "prostate_mr_us" / "images"
    mr_us = default_deformable(
        load_image(prostate / "case000000_us.nii.gz"), load_image(prostate / "case000000_mr.nii.gz")
    )
    assert mr_us.method == "demons", mr_us
    spine = shared_data / "spine_multimodal" / "images"
    t1_t2 = default_deformable(load_image(spine / "T2w.nii.gz"), load_image(spine / "T1w.nii.gz"))
    assert t1_t2.method == "demons", t1_t2


@pytest.mark.usefixtures("app_root_cwd")
def test_register_page_starts_from_the_pair_default():
    pytest.importorskip("streamlit")
    from app_kit import assert_clean, open_page

    from regcore.data import Pair

    at = open_page("register")
    body = anatomy()
    at.session_state["pair"] = Pair("inverted 3d", Image(body[None], GEOM), Image((1.0 - body)[None], GEOM))
    at.run()
    assert_clean(at)
    assert at.selectbox(key="reg_method").value == "demons"
    (note,) = [c.value for c in at.caption if c.value.startswith("Default for this pair")]
    assert "demons, because the two images' contrasts differ" in note
    (auto,) = [c.value for c in at.caption if c.value.startswith("Auto on this pair")]
    assert "compares MIND descriptors, because the intensities correlate locally at r = -" in auto
    assert "MIND neighbours 1 voxel (1 mm) apart" in auto  # the physical scale: 1 mm finest spacing
    at.selectbox(key="reg_p_demons_features").set_value("intensity").run()  # the user's choice: not auto
    assert not [c for c in at.caption if c.value.startswith("Auto on this pair") and "compares" in c.value]
    at.selectbox(key="reg_p_demons_features").set_value("auto").run()
    assert not [w for w in at.warning if "contrasts differ" in w.value]  # MIND: no warning
    at.selectbox(key="reg_p_demons_features").set_value("intensity").run()
    (warning,) = [w.value for w in at.warning if "contrasts differ" in w.value]
    assert "compares intensities (features = intensity)" in warning
    at.selectbox(key="reg_p_demons_features").set_value("auto").run()
    at.selectbox(key="reg_family").set_value("diffeomorphic").run()
    at.selectbox(key="reg_method").set_value("fireants").run()  # the user's choice: no note
    assert not [c for c in at.caption if c.value.startswith("Default for this pair")]
    assert not [w for w in at.warning if "contrasts differ" in w.value]  # auto: fireants compares MIND here
    (auto,) = [
        c.value for c in at.caption if c.value.startswith("Auto on this pair") and "similarity" in c.value
    ]
    assert "similarity mind, because the intensities correlate locally at r = -" in auto
    assert "with MIND the field is smoothed 3x wider (sigma 1.5 voxels)" in auto
    assert "MIND neighbours 1 voxel (1 mm) apart" in auto
    at.selectbox(key="reg_p_fireants_similarity").set_value("lncc").run()
    (warning,) = [w.value for w in at.warning if "contrasts differ" in w.value]  # the user's LNCC
    assert "compares intensities (similarity = lncc)" in warning and "r = -" in warning
    at.selectbox(key="reg_family").set_value("deformable").run()
    at.selectbox(key="reg_method").set_value("dense").run()  # similarity "auto" follows the same test
    (auto,) = [c.value for c in at.caption if c.value.startswith("Auto on this pair")]
    assert "similarity mind, because the intensities correlate locally at r = -" in auto
    assert (
        "MIND neighbours 1 voxel (1 mm) apart" in auto and "smoothed" not in auto
    )  # fireants' widening only
    assert "Set similarity to choose another." in auto
    at.selectbox(key="reg_p_dense_similarity").set_value("lncc").run()
    assert not [c for c in at.caption if c.value.startswith("Auto on this pair")]
    assert_clean(at)
