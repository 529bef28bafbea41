"""The pair sets of the development benchmark (``dev_benchmark.py``), their tune / held-out split and their notes.

All from ../shared/data (or ``REGLAB_SHARED_DATA``). Every loader returns ``regcore.data.Pair`` objects whose moving
image and labels already lie on the fixed grid, so every method (peers too) sees the same voxels.

* ``brain2d``: 2D slices of the two labelled OASIS volumes (``regcore.data.slices.slice_pairs``): sagittal,
  axial and coronal slices (tensor axes 0, 1, 2) at several positions, both directions (0455 <- 0456 and
  0456 <- 0455), 35 labels. **Tune** = the slice positions of split ``train``; **held-out** = split
  ``held_out`` (one block of 6 slices in three; no default was chosen on them).
* ``histology``: the CIMA lung sections, He <-> proSPC (both directions, landmarks of annotator PS, TRE in px),
  downsampled 3x; every method (peers too) runs after regcore's affine stage, as in the app. Held-out only.
* ``stains``: two stain renderings of scikit-image's IHC section, one deformed by a known random affine and smooth
  field (``stain_pairs.py``), both directions, TRE in px on 80 tissue points, after regcore's affine stage as
  histology. **Tune** = seeds 0-5 (the affine start rule was chosen on them); **held-out** = seeds 6-11.
* ``oasis3d``: OASIS 0455 <-> 0456 in 3D at 1 mm (both directions), the only labelled 3D pair. Run as split
  ``held_out``, but it is **not** held out for the 3D defaults: fireants' 3D preset was chosen on it.
* ``oasis3d_unlabelled``: the third OASIS subject (``OASIS_htwin_moving``, no labels) registered to 0455 and to
  0456. Held out; folding, SDlogJ and the global NCC after registration.
* ``spine``: one subject's cervical spine, cord masks: T2w (1 mm) -> T2* crop (0.5 x 0.5 x 7.5 mm, 9 slices) and
  T1w -> T2w (1 mm, inverted grey/white contrast), the moving image and mask resampled onto the fixed grid through
  the headers (they overlap as stored). Held out: no default was chosen on it.
* ``prostate``: the 8 MR -> TRUS cases of Hu et al. (``regcore.data.prostate``; 44 x 59 x 41 at 0.4 mm): the MR
  centre-aligned and resampled onto the TRUS grid, gland masks (Dice) and landmark centroids (TRE, 5 cases).
  Multimodal with weak intensity correspondence: an intensity method should at least not lose the centre
  alignment (the identity row). Held out for every classical default (the learned label_driven model's folds do
  not matter here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _shared_data import SHARED as DATA

from regcore.data.pairs import Pair

ROOT = Path(__file__).resolve().parents[1]
SETS = ("brain2d", "histology", "stains", "oasis3d", "oasis3d_unlabelled", "spine", "prostate")
SPLITS = ("tune", "held_out")
THREE_D = ("oasis3d", "oasis3d_unlabelled", "spine", "prostate")
"""3D sets (their default: ``DEFAULT_DEFORMABLE[3]``, unless their pairs' own default says otherwise)."""
HISTOLOGY_SHRINK = 3
INITIAL = {"histology": "affine", "stains": "affine"}
"""Stage before every method (peers too), as the app runs real data; "none" for the sets not named: the OASIS images
are already affinely aligned (neurite-OASIS preprocessing), the spine images overlap through their headers, the
prostate MR is centre-aligned by its loader; the histology sections are not aligned at all, and the stain pairs
carry a random affine."""

DEMONS_RULE = (
    "but demons' feature rule (MIND descriptors below a local intensity correlation of 0.4, "
    "regcore/methods/classical/demons_features.py) was set after seeing that correlation here and on "
    "benchmarks/multimodal.py's 2D pairs."
)
SET_NOTES = {
    "histology": "Held out: no default was tuned on it; " + DEMONS_RULE,
    "stains": "Synthetic deformation of real tissue (scikit-image's IHC section, two stains separated by colour "
    "deconvolution), so the TRE is exact. Tune = seeds 0-5, where the affine stage's start (identity or centres of "
    "mass, whichever the similarity prefers) was chosen; held-out = seeds 6-11.",
    "oasis3d": "Not held out for regcore's 3D defaults: fireants' 3D preset was chosen on this pair (the only "
    "labelled 3D pair; grid in benchmarks/README.md). The peers ran with their own defaults.",
    "oasis3d_unlabelled": "Held out: a third subject nothing was tuned on, no labels (so no Dice): folding and "
    "SDlogJ show how smooth the fields are on a new subject, the global NCC how well the intensities match.",
    "spine": "Held out: no default was tuned on it; "
    + DEMONS_RULE
    + " Cord Dice of T2w -> T2* crop (0.5 x 0.5 x 7.5 mm) and T1w -> T2w (1 mm, inverted contrast: SSD-driven "
    "forces cannot follow it).",
    "prostate": "Held out: no default was tuned on it; "
    + DEMONS_RULE
    + " MR -> TRUS after centre alignment (the identity row), gland Dice and landmark TRE (5 of 8 cases): "
    "intensity similarity is weak across MR and ultrasound.",
}
"""A line printed under a set's heading: how far its numbers are from tuning."""


def brain2d_pairs(split: str, per_axis: int) -> list[Pair]:
    """Slice pairs of the two labelled OASIS volumes; ``tune`` = slice_pairs' ``train`` positions."""
    from regcore.data.slices import slice_pairs

    return slice_pairs(DATA / "brain3d", "train" if split == "tune" else "held_out", per_axis=per_axis)


def histology_pairs() -> list[Pair]:
    """He <-> proSPC, both directions, TRE on annotator PS's landmarks, images and points shrunk 3x."""
    from regcore.data import load_manifest

    ds = load_manifest(ROOT / "benchmarks" / "manifests" / "histology2d.csv")
    (pair,) = list(ds.pairs())
    forward = _shrunk(pair, HISTOLOGY_SHRINK)
    backward = Pair(
        name=f"{pair.name} (reversed)",
        fixed=forward.moving,
        moving=forward.fixed,
        fixed_landmarks=forward.moving_landmarks,
        moving_landmarks=forward.fixed_landmarks,
    )
    return [forward, backward]


def _shrunk(pair: Pair, k: int) -> Pair:
    """Block-average both images by ``k`` (spacing x k) so the physical landmarks stay where they are."""
    from regcore.image import Image

    def shrink(image: Image) -> Image:
        a = image.data[0].numpy()
        h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
        small = a[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3)).astype(np.float32)
        return Image.from_array(small, spacing=tuple(s * k for s in image.spacing), name=image.name)

    return Pair(
        name=f"{pair.name}, shrunk {k}x",
        fixed=shrink(pair.fixed),
        moving=shrink(pair.moving),
        fixed_landmarks=pair.fixed_landmarks,
        moving_landmarks=pair.moving_landmarks,
    )


def oasis3d_pairs() -> list[Pair]:
    from regcore.data import load_manifest

    ds = load_manifest(ROOT / "benchmarks" / "manifests" / "brain3d.csv")
    return list(ds.pairs())


def oasis3d_unlabelled_pairs() -> list[Pair]:
    """The unlabelled third subject (moving) to each labelled one (fixed), 1 mm, already affinely aligned."""
    from regcore.io import load_image

    images = DATA / "brain3d" / "images"
    moving = load_image(images / "OASIS_htwin_moving.nii.gz")
    return [
        Pair(
            name=f"OASIS 3D htwin->{s}",
            fixed=load_image(images / f"OASIS_OAS1_{s}_MR1.nii.gz"),
            moving=moving,
        )
        for s in ("0455", "0456")
    ]


def spine_pair(fixed: str, moving: str, fixed_mask: str, moving_mask: str, name: str) -> Pair:
    """One spine pair (file stems under ``spine_multimodal/``): the moving image and its cord mask resampled onto
    the fixed grid through physical space (as ``regcore.register.run_registration`` does)."""
    from regcore.io import load_image
    from regcore.register import prepare_moving

    d = DATA / "spine_multimodal"
    fixed_image = load_image(d / "images" / f"{fixed}.nii.gz")
    return Pair(
        name=name,
        fixed=fixed_image,
        moving=prepare_moving(fixed_image, load_image(d / "images" / f"{moving}.nii.gz")),
        fixed_labels=load_image(d / "labels" / f"{fixed_mask}.nii.gz", is_labels=True),
        moving_labels=prepare_moving(
            fixed_image, load_image(d / "labels" / f"{moving_mask}.nii.gz", is_labels=True)
        ),
        label_names={1: "spinal cord"},
    )


def spine_t2star_pair() -> Pair:
    """T2w -> T2* crop (0.5 x 0.5 x 7.5 mm, 49 x 54 x 9), cord masks (also ``anisotropic.py``'s spine set)."""
    return spine_pair(
        "T2star_crop",
        "T2w",
        "T2star_crop_cordseg",
        "T2w_cordseg_manual",
        "spine T2w -> T2* crop (0.5 x 0.5 x 7.5 mm), cord",
    )


def spine_pairs() -> list[Pair]:
    """The T2* stack and T1w -> T2w, both with cord masks."""
    return [
        spine_t2star_pair(),
        spine_pair("T2w", "T1w", "T2w_cordseg_manual", "T1w_cordseg_manual", "spine T1w -> T2w (1 mm), cord"),
    ]


def prostate_pairs() -> list[Pair]:
    """The 8 MR (moving, centre-aligned, on the TRUS grid) -> TRUS (fixed) cases, gland masks, landmark centroids."""
    from regcore.data.prostate import prostate_cases

    return [
        Pair(
            name=f"prostate {case.id} MR -> TRUS",
            fixed=case.us,
            moving=case.mr,
            fixed_labels=case.us_gland,
            moving_labels=case.mr_gland,
            fixed_landmarks=case.us_points,
            moving_landmarks=case.mr_points,
            label_names={1: "prostate gland"},
        )
        for case in prostate_cases(DATA / "prostate_mr_us")
    ]


def pairs_of(name: str, split: str, per_axis: int) -> list[Pair]:
    """The pairs of set ``name`` in ``split`` (``tune`` or ``held_out``); brain2d and stains have a tune part."""
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; known: {SETS}")
    if name == "brain2d":
        return brain2d_pairs(split, per_axis)
    if name == "stains":
        from stain_pairs import stain_pairs

        return stain_pairs(split)
    if split == "tune":
        return []  # held out; 3D OASIS: no tune/held-out split (one pair; see SET_NOTES)
    loaders = {
        "histology": histology_pairs,
        "oasis3d": oasis3d_pairs,
        "oasis3d_unlabelled": oasis3d_unlabelled_pairs,
        "spine": spine_pairs,
        "prostate": prostate_pairs,
    }
    return loaders[name]()
