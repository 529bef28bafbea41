"""Make synthetic subjects ``template o psi_i`` with images, labels, landmarks and transforms.

Used by :mod:`regcore.data.samples`; writes one unit folder (layout in that module's docstring).
Brain: the wheel MNI template (:mod:`regcore.data.template`) in T1 and a T2-like contrast.
Shapes: one SynthMorph-style label map (:mod:`regcore.data.synth`), each subject rendered in
its own random contrast. All files are written byte-deterministically (gzip mtime 0).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from regcore.data import deform, synth
from regcore.image import Geometry
from regcore.spatial.warp import warp

LANDMARK_RESIDUAL_LIMIT_VOX = 0.05
BRAIN_DEFORMATION = dict(
    max_displacement_mm=5.0,
    smoothness_mm=16.0,
    control_spacing_mm=8.0,
    max_rotation_deg=3.0,
    max_translation_mm=3.0,
    max_scaling=0.03,
)
SHAPES = {2: (128, 128), 3: (64, 64, 64)}
SHAPES_LABELS = 12
SHAPES_DEFORMATION = {
    2: dict(
        max_displacement_mm=6.0,
        smoothness_mm=12.0,
        control_spacing_mm=8.0,
        max_rotation_deg=5.0,
        max_translation_mm=4.0,
        max_scaling=0.05,
    ),
    3: dict(
        max_displacement_mm=4.0,
        smoothness_mm=10.0,
        control_spacing_mm=6.0,
        max_rotation_deg=4.0,
        max_translation_mm=3.0,
        max_scaling=0.04,
    ),
}


def subject_id(k: int) -> str:
    return f"subject_{k:02d}"


# -- file writing ---------------------------------------------------------------------------------
def ras_affine(geometry: Geometry, slice_z_mm: float = 0.0) -> np.ndarray:
    """4x4 NIfTI (RAS) affine of a 2D/3D Geometry (2D: the plane at LPS z = ``slice_z_mm``)."""
    n = geometry.ndim
    lps = np.eye(4)
    m = geometry.index_to_world
    lps[:n, :n] = m[:n, :n]
    lps[:n, 3] = m[:n, n]
    if n == 2:
        lps[2, 3] = slice_z_mm
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_nifti(
    path: Path, array: np.ndarray, geometry: Geometry, *, labels: bool, slice_z_mm: float = 0.0
) -> None:
    """Write ``(*S)`` as .nii.gz: labels uint8; images in [0, 1] as uint8 with scl_slope 1/255."""
    if labels:
        data = np.asarray(array).astype(np.uint8)
        img = nib.Nifti1Image(data, ras_affine(geometry, slice_z_mm))
        img.header.set_slope_inter(1.0, 0.0)
    else:
        data = np.round(np.clip(np.asarray(array, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
        img = nib.Nifti1Image(data, ras_affine(geometry, slice_z_mm))
        img.header.set_slope_inter(1.0 / 255.0, 0.0)
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def write_landmarks(path: Path, ids: list[str], points_mm: np.ndarray) -> None:
    """``id,x_lps,y_lps[,z_lps]`` in mm (what ``regcore.io.load_landmarks`` reads as LPS mm)."""
    cols = ["x_lps", "y_lps", "z_lps"][: points_mm.shape[1]]
    lines = ["id," + ",".join(cols)]
    lines += [f"{i}," + ",".join(f"{v:.4f}" for v in p) for i, p in zip(ids, points_mm)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_label_names(path: Path, names: dict[int, str]) -> None:
    path.write_text(
        "value,name\n0,background\n" + "".join(f"{k},{v}\n" for k, v in sorted(names.items())),
        encoding="utf-8",
    )


def save_transform(path: Path, transform: deform.SubjectTransform) -> None:
    """Parameters as .npz written through a fixed-timestamp zip (byte-deterministic)."""
    import io
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in transform.to_arrays().items():
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arr, dtype=np.float64))
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def load_transform(path: Path) -> deform.SubjectTransform:
    with np.load(path) as arrays:
        return deform.SubjectTransform.from_arrays(arrays)


# -- templates ------------------------------------------------------------------------------------
def _brain_template(spec):
    from regcore.data.template import (
        STRUCTURES,
        load_brain_template,
        sample_grid,
        slice_grid,
        template_landmarks,
    )

    tpl = load_brain_template(spec.resolution_mm, axial_slice=spec.dims == 2)
    slice_z = 0.0
    if spec.dims == 2:
        full = sample_grid(spec.resolution_mm)
        slice_z = full.origin[2] + slice_grid(full)[1] * full.spacing[2]
    channels = np.stack([tpl.t1, tpl.gm, tpl.wm, tpl.csf, (tpl.t1 > 0).astype(np.float32)])
    points, ids = template_landmarks(tpl.labels, tpl.t1, names=STRUCTURES)
    present = {int(v) for v in np.unique(tpl.labels)} - {0}
    names = {k: v for k, v in STRUCTURES.items() if k in present}
    return dict(
        geometry=tpl.geometry,
        channels=channels,
        labels=tpl.labels,
        points=points,
        ids=ids,
        names=names,
        slice_z=slice_z,
        deformation=BRAIN_DEFORMATION,
        contrasts=("t1", "t2"),
    )


def _shapes_template(spec, rng):
    shape = SHAPES[spec.dims]
    labels = synth.random_label_map(shape, SHAPES_LABELS, rng, scale=min(shape) / 4.0)
    from regcore.data.template import template_landmarks

    names = {k: f"shape_{k:02d}" for k in range(1, SHAPES_LABELS + 1)}
    points, ids = template_landmarks(labels, labels.astype(np.float32), n_salient=0, names=names)
    return dict(
        geometry=Geometry.identity(shape, 1.0),
        channels=None,
        labels=labels,
        points=points,
        ids=ids,
        names=names,
        slice_z=0.0,
        deformation=SHAPES_DEFORMATION[spec.dims],
        contrasts=("synth",),
    )


def _render_brain(channels: torch.Tensor, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t1, gm, wm, csf, mask = (c.numpy() for c in channels[0])
    brain = mask > 0.5
    t2 = np.clip(1.0 * csf + 0.45 * gm + 0.22 * wm, 0.0, 1.0)
    return {"t1": synth.mri_artefacts(t1, rng, brain), "t2": synth.mri_artefacts(t2, rng, brain)}


# -- the builder ----------------------------------------------------------------------------------
def build_subjects(spec, out: Path, *, subjects: int, seed: int) -> dict:
    """Write ``subjects`` subjects of unit ``spec`` into ``out``; returns the manifest dict (no version)."""
    base_rng = np.random.default_rng([seed, spec.seed_key, 999])
    tpl = _brain_template(spec) if spec.dataset == "brain" else _shapes_template(spec, base_rng)
    geom: Geometry = tpl["geometry"]
    fov = tuple((n - 1) * h for n, h in zip(geom.shape, geom.spacing))
    labels_t = torch.from_numpy(tpl["labels"].astype(np.int64))[None, None]
    channels_t = torch.from_numpy(tpl["channels"])[None] if tpl["channels"] is not None else None
    points_t = torch.from_numpy(tpl["points"])
    write_label_names(out / "label_names.csv", tpl["names"])
    residuals, ids = [], []
    for k in range(subjects):
        sid = subject_id(k)
        rng = np.random.default_rng([seed, spec.seed_key, k])
        transform = deform.random_transform(geom.ndim, fov, rng, **tpl["deformation"])
        w = transform.forward_displacement(geom.shape, geom.spacing)
        w32 = w.float()
        pad = "zeros" if spec.dataset == "brain" else "border"  # shapes: every voxel keeps a label
        seg = warp(labels_t, w32, mode="nearest", padding_mode=pad)[0, 0].numpy()
        if spec.dataset == "brain":
            images = _render_brain(warp(channels_t, w32, mode="bilinear", padding_mode="zeros"), rng)
        else:
            images = {"synth": synth.render(seg, rng)}
        for contrast, img in images.items():
            write_nifti(
                out / "images" / f"{sid}_{contrast}.nii.gz",
                img,
                geom,
                labels=False,
                slice_z_mm=tpl["slice_z"],
            )
        write_nifti(out / "labels" / f"{sid}_seg.nii.gz", seg, geom, labels=True, slice_z_mm=tpl["slice_z"])
        pts_vox, residual = deform.invert_points(w, points_t)
        residuals.append(residual)
        write_landmarks(
            out / "landmarks" / f"{sid}.csv", tpl["ids"], geom.index_to_world_points(pts_vox.numpy())
        )
        save_transform(out / "transforms" / f"{sid}.npz", transform)
        ids.append(sid)
    if max(residuals) > LANDMARK_RESIDUAL_LIMIT_VOX:
        raise RuntimeError(
            f"landmark inversion residual {max(residuals):.3g} voxels exceeds "
            f"{LANDMARK_RESIDUAL_LIMIT_VOX}: the random deformation is too strong"
        )
    return {
        "dataset": spec.dataset,
        "dims": spec.dims,
        "resolution_mm": spec.resolution_mm,
        "subjects": ids,
        "contrasts": list(tpl["contrasts"]),
        "n_landmarks": len(tpl["ids"]),
        "geometry": {
            "shape": list(geom.shape),
            "spacing": list(geom.spacing),
            "origin": list(geom.origin),
            "direction": [list(r) for r in geom.direction],
        },
        "slice_z_mm": tpl["slice_z"] if spec.dims == 2 and spec.dataset == "brain" else None,
        "deformation": tpl["deformation"],
        "landmark_inversion_residual_vox": round(max(residuals), 6),
        "transform": "subject = template o psi; psi = affine o exp(v) maps subject voxels to template voxels",
    }
