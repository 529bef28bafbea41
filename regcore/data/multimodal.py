"""Real and synthetic 2D MULTIMODAL pairs (different contrasts) with a fixed train/held-out split.

    >>> train = multimodal_pairs("sample_t1t2", "train")        # always available (built-in data)
    >>> test = multimodal_pairs("prostate_mr_us", "heldout")    # needs ../shared/data

Sets (:data:`MULTIMODAL_SETS`); every pair's ``fixed``/``moving`` are 2D Images in [0, 1] on the
SAME grid (spacing of the in-plane axes, origin 0), with label maps and, where the data has them,
2D landmarks in mm of that grid (same id = same structure):

* ``"sample_t1t2"``: built-in synthetic brain subjects (2 mm axial slice), fixed = subject i in T1,
  moving = subject j in the T2-like contrast (:func:`regcore.data.sample_pair`), 41 structures and
  landmarks. Split BY SUBJECT: subjects 0-6 train, 7-9 held out (every ordered pair within a split).
* ``"prostate_mr_us"``: ``prostate_mr_us`` (Hu et al. 2018): fixed = TRUS, moving = MR after
  aligning the two image CENTRES (as the data README says) and resampling the MR onto the TRUS grid
  (0.4 mm); axial slices (tensor axis 2) through the TRUS gland, every 3rd slice where the gland
  covers >= 30 % of its largest slice; gland labels; landmarks whose TRUS centroid lies within
  1.2 mm of the slice (in-plane coordinates). Split BY CASE, the same as
  :data:`regcore.data.prostate.HELD_OUT`: cases 0, 1, 2, 3, 5, 6 train; cases 4 and 7 held out
  (both have landmarks). Loaded with :func:`regcore.data.prostate.prostate_cases`.
* ``"spine_t1t2"``: ``spine_multimodal`` (one subject): fixed = T2w, moving = T1w resampled onto the
  T2w grid through the headers (they overlap as stored), cropped to the box both images cover;
  axial slices (T2w tensor axis 1 runs superior-inferior) with cord masks on both. Split BY SLICE
  POSITION with :func:`regcore.data.slices.split_of` (blocks of 6 slices, one block in three held
  out); every 2nd position of a split. No landmarks.

The shared folder is ``root``, else ``$REGLAB_SHARED_DATA``, else ``<repo>/../shared/data``; when it is
missing, :class:`FileNotFoundError` names it (callers skip on it; ``"sample_t1t2"`` never needs it).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from regcore.data.pairs import Pair
from regcore.image import Geometry, Image, Landmarks

MULTIMODAL_SETS = ("sample_t1t2", "prostate_mr_us", "spine_t1t2")
SPLITS = ("train", "heldout")
SAMPLE_TRAIN_SUBJECTS = tuple(range(7))
SAMPLE_HELDOUT_SUBJECTS = (7, 8, 9)
PROSTATE_TRAIN_CASES = (0, 1, 2, 3, 5, 6)
PROSTATE_HELDOUT_CASES = (4, 7)  # = regcore.data.prostate.HELD_OUT (both have landmarks)
PROSTATE_SLICE_STRIDE = 3
PROSTATE_MIN_GLAND = 0.3
PROSTATE_LANDMARK_MM = 1.2
SPINE_STRIDE = 2
SPINE_AXIS = 1  # T2w tensor axis 1 runs superior-inferior (its header): axial slices


def shared_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$REGLAB_SHARED_DATA``, else ``<repo>/../shared/data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("REGLAB_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def multimodal_pairs(name: str, split: str, root: Path | None = None) -> list[Pair]:
    """2D multimodal pairs of one set and split (see the module docstring for each set's rule).

    Args:
        name: one of :data:`MULTIMODAL_SETS`.
        split: ``"train"`` or ``"heldout"``.
        root: the shared data folder (default :func:`shared_root`); ignored by ``"sample_t1t2"``.
    Returns:
        Pairs with ``fixed``/``moving`` ``(1, H, W)`` float32 in [0, 1] on one grid, ``fixed_labels``/
        ``moving_labels``, landmarks (LPS-style mm of the 2D grid) or None, ``modality``
        ``"<fixed>/<moving>"`` and ``meta`` (set, split, case/subjects, slice position).
    Raises:
        ValueError: unknown ``name`` or ``split``.
        FileNotFoundError: the shared data folder (or the set's sub-folder) is missing.
    """
    if name not in MULTIMODAL_SETS:
        raise ValueError(f"name must be one of {MULTIMODAL_SETS}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split for multimodal set {name!r} must be one of {SPLITS}, got {split!r}")
    if name == "sample_t1t2":
        return _sample_pairs(split)
    folder = shared_root(root) / ("prostate_mr_us" if name == "prostate_mr_us" else "spine_multimodal")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"multimodal set {name!r} needs {folder} (set REGLAB_SHARED_DATA or pass root=)"
        )
    if name == "prostate_mr_us":
        return _prostate_pairs(folder, split)
    return _spine_pairs(folder, split)


# -- helpers --------------------------------------------------------------------------------------
def _unit(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Clip to the 1-99.5 percentiles (of ``mask`` voxels if given) and scale to [0, 1]."""
    values = x[mask] if mask is not None and mask.any() else x.reshape(-1)
    lo, hi = np.percentile(values, [1.0, 99.5])
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _image2d(array: np.ndarray, spacing: tuple[float, float], labels: bool, name: str) -> Image:
    return Image.from_array(
        array.astype(np.int64 if labels else np.float32),
        Geometry.identity(tuple(array.shape), spacing),
        is_labels=labels,
        name=name,
    )


def _landmarks2d(ids: list[str], points_vox: list[np.ndarray], spacing) -> Landmarks | None:
    if not ids:
        return None
    return Landmarks(np.array(points_vox, dtype=float) * np.asarray(spacing, dtype=float), tuple(ids))


# -- sample_t1t2 ----------------------------------------------------------------------------------
def _sample_pairs(split: str) -> list[Pair]:
    from regcore.data.pairs import sample_pair

    subjects = SAMPLE_TRAIN_SUBJECTS if split == "train" else SAMPLE_HELDOUT_SUBJECTS
    out = []
    for f in subjects:
        for m in subjects:
            if f == m:
                continue
            p = sample_pair("brain", 2, fixed=f, moving=m, contrast="t2")
            p.meta.update(set="sample_t1t2", split=split)
            out.append(p)
    return out


# -- prostate_mr_us -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _prostate_volumes(folder: str) -> tuple[dict, ...]:
    """Per case (:func:`regcore.data.prostate.prostate_cases`, MR centre-aligned onto the TRUS grid):
    arrays and landmark centroids as TRUS voxel indices ``{id: (fixed ijk, moving ijk)}``."""
    from regcore.data.prostate import prostate_cases

    out = []
    for case in prostate_cases(folder):
        g = case.us.geometry
        lms = {}
        if case.has_landmarks:
            fp, mp, ids = case.us_points.matched(case.mr_points)
            lms = dict(zip(ids, zip(g.world_to_index_points(fp), g.world_to_index_points(mp))))
        out.append(
            {
                "case": int(case.id[-6:]),
                "spacing": g.spacing,
                "us": case.us.numpy(),
                "mr": case.mr.numpy(),
                "us_gland": case.us_gland.numpy(),
                "mr_gland": case.mr_gland.numpy(),
                "landmarks": lms,
            }
        )
    return tuple(out)


def _prostate_pairs(folder: Path, split: str) -> list[Pair]:
    cases = PROSTATE_TRAIN_CASES if split == "train" else PROSTATE_HELDOUT_CASES
    out = []
    for vol in _prostate_volumes(str(folder)):
        if vol["case"] not in cases:
            continue
        gland = vol["us_gland"] > 0
        area = gland.sum(axis=(0, 1))
        positions = np.flatnonzero(area >= PROSTATE_MIN_GLAND * area.max())[::PROSTATE_SLICE_STRIDE]
        sp2 = tuple(float(s) for s in vol["spacing"][:2])
        us_img, mr_img = _unit(vol["us"]), _unit(vol["mr"])
        for z in positions:
            ids, fpts, mpts = [], [], []
            for lid, (a, b) in vol["landmarks"].items():
                if abs(a[2] - z) * vol["spacing"][2] <= PROSTATE_LANDMARK_MM:
                    ids.append(lid)
                    fpts.append(a[:2])
                    mpts.append(b[:2])
            out.append(
                Pair(
                    name=f"prostate case{vol['case']:06d} TRUS <- MR, axial slice {int(z)}",
                    fixed=_image2d(us_img[:, :, z], sp2, False, f"case{vol['case']}_us_z{z}"),
                    moving=_image2d(mr_img[:, :, z], sp2, False, f"case{vol['case']}_mr_z{z}"),
                    fixed_labels=_image2d(vol["us_gland"][:, :, z] > 0, sp2, True, "us_gland"),
                    moving_labels=_image2d(vol["mr_gland"][:, :, z] > 0, sp2, True, "mr_gland"),
                    fixed_landmarks=_landmarks2d(ids, fpts, sp2),
                    moving_landmarks=_landmarks2d(ids, mpts, sp2),
                    label_names={1: "gland"},
                    modality="us/mr",
                    meta={"set": "prostate_mr_us", "split": split, "case": vol["case"], "position": int(z)},
                )
            )
    return out


# -- spine_t1t2 -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _spine_volumes(folder: str) -> dict:
    from regcore.io import load_image
    from regcore.preprocess import resample_to

    f = Path(folder)
    t2 = load_image(f / "images" / "T2w.nii.gz", is_labels=False)
    t1 = load_image(f / "images" / "T1w.nii.gz", is_labels=False)
    t2_cord = load_image(f / "labels" / "T2w_cordseg_manual.nii.gz", is_labels=True)
    t1_cord = load_image(f / "labels" / "T1w_cordseg_manual.nii.gz", is_labels=True)
    g = t2.geometry
    inside = resample_to(Image(torch.ones_like(t1.data), t1.geometry), g, default=0.0).numpy() > 0.5
    t1_on = resample_to(t1, g).numpy()
    cord1 = resample_to(t1_cord, g).numpy()
    box = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    sl = tuple(slice(int(b[0]), int(b[-1]) + 1) for b in box)
    mask_t2 = t2.numpy()[sl] > 0
    return {
        "spacing": g.spacing,
        "offset": tuple(int(b[0]) for b in box),
        "t2": _unit(t2.numpy()[sl], mask_t2),
        "t1": _unit(t1_on[sl], inside[sl]),
        "t2_cord": t2_cord.numpy()[sl],
        "t1_cord": cord1[sl],
    }


def _spine_pairs(folder: Path, split: str) -> list[Pair]:
    from regcore.data.slices import split_of

    vol = _spine_volumes(str(folder))
    ax = SPINE_AXIS
    sp2 = tuple(float(s) for i, s in enumerate(vol["spacing"]) if i != ax)
    want = "train" if split == "train" else "held_out"

    def cut(key: str, p: int) -> np.ndarray:
        return np.take(vol[key], p, axis=ax)

    positions = [
        p
        for p in range(vol["t2"].shape[ax])
        if (cut("t2_cord", p) > 0).any()
        and (cut("t1_cord", p) > 0).any()
        and split_of(p + vol["offset"][ax]) == want
    ]
    out = []
    for p in positions[::SPINE_STRIDE]:
        pos = p + vol["offset"][ax]
        out.append(
            Pair(
                name=f"spine T2w <- T1w, axial slice {pos}",
                fixed=_image2d(cut("t2", p), sp2, False, f"T2w_s{pos}"),
                moving=_image2d(cut("t1", p), sp2, False, f"T1w_s{pos}"),
                fixed_labels=_image2d(cut("t2_cord", p) > 0, sp2, True, "T2w_cord"),
                moving_labels=_image2d(cut("t1_cord", p) > 0, sp2, True, "T1w_cord"),
                label_names={1: "spinal cord"},
                modality="t2/t1",
                meta={"set": "spine_t1t2", "split": split, "position": pos},
            )
        )
    return out


# -- aligned training pairs (for learned multimodal similarities) ---------------------------------
def aligned_pair(pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fixed, moving_aligned)`` ``(1, 1, *S)`` in [0, 1] (robustly normalised as inference does).

    The moving image is aligned to the fixed one by the pair's true field when it has one (synthetic
    sample brains), else by a smooth dense fit of its label maps (MSE of the one-hot labels, diffusion
    regulariser; meant for TRAINING pairs only: it uses their labels), else returned as it is.
    """
    import torch.nn.functional as F

    from regcore.losses import make_regularizer, make_similarity
    from regcore.methods.classical.dense import optimise_field
    from regcore.nets.inputs import normalise_intensity
    from regcore.spatial.warp import warp

    fixed = normalise_intensity(pair.fixed.batch()[:, :1].float())
    moving = normalise_intensity(pair.moving.batch()[:, :1].float())
    if pair.true_displacement is not None:
        return fixed, warp(moving, pair.true_displacement.float())
    if pair.fixed_labels is None or pair.moving_labels is None:
        return fixed, moving
    lf, lm = pair.fixed_labels.batch().long(), pair.moving_labels.batch().long()
    k = int(max(lf.max(), lm.max())) + 1
    one_f = F.one_hot(lf[:, 0], k).movedim(-1, 1)[:, 1:].float()
    one_m = F.one_hot(lm[:, 0], k).movedim(-1, 1)[:, 1:].float()
    with torch.enable_grad():
        u = optimise_field(
            one_f,
            one_m,
            levels=(4, 2, 1),
            iterations=(60, 40, 20),
            learning_rate=0.2,
            similarity=make_similarity("mse", fixed.ndim - 2),
            regularizer=make_regularizer("diffusion"),
            weight=0.5,
        )
    return fixed, warp(moving, u)
