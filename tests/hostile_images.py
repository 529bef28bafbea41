"""Malformed and hostile image files, generated on demand (nothing binary is committed).

``write_images(folder) -> {case_id: (path, expectation)}``; ``expectation`` is ``("error", needle)``
(a clear error whose message contains ``needle``: the file name or the header field) or
``("ok", None)`` (sensible handling: the file loads). Every file is small (the largest is a ~4 MiB
gzip whose header lies about its size); sizes are declared, never written.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np


def _nifti(
    path: Path,
    data: np.ndarray,
    *,
    rows=None,
    qform=None,
    pixdim=None,
    patch=None,
    dtype=None,
    shape=None,
    payload: bytes | None = None,
) -> Path:
    """A single-file NIfTI written byte by byte, so any header field can lie."""
    h = nib.Nifti1Header()
    h.set_data_dtype(dtype or data.dtype)
    h.set_data_shape(shape or data.shape)
    h["vox_offset"] = 352
    if rows is not None:
        h["sform_code"], h["qform_code"] = 1, 0
        h["srow_x"], h["srow_y"], h["srow_z"] = rows
    elif qform is not None:
        h.set_qform(qform, code=1)
    if pixdim is not None:
        h["pixdim"][1 : 1 + len(pixdim)] = pixdim
    for k, v in (patch or {}).items():
        h[k] = v
    body = (
        h.binaryblock + b"\0" * 4 + (payload if payload is not None else np.asarray(data).tobytes(order="F"))
    )
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(body, compresslevel=1))
    else:
        path.write_bytes(body)
    return path


def _mha(path: Path, header: str, data: bytes = b"") -> Path:
    path.write_bytes(header.encode() + data)
    return path


def _zip_with_sizes(
    path: Path, members: dict[str, bytes], declared: int | None = None, flag: int = 0
) -> Path:
    """A zip whose central directory may declare another uncompressed size (or the encryption flag)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    if declared is None and not flag:
        return path
    raw = bytearray(path.read_bytes())
    pos = 0
    while (pos := raw.find(b"PK\x01\x02", pos)) >= 0:  # central directory headers
        if declared is not None:
            struct.pack_into("<I", raw, pos + 24, declared)
        struct.pack_into("<H", raw, pos + 8, struct.unpack_from("<H", raw, pos + 8)[0] | flag)
        pos += 4
    path.write_bytes(bytes(raw))
    return path


def _dicm(body: bytes = b"") -> bytes:
    return b"\0" * 128 + b"DICM" + body


def write_images(folder: Path) -> dict[str, tuple[Path, tuple[str, str | None]]]:
    """Write every hostile image of the corpus into ``folder``."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = rng.random((16, 16, 8), dtype=np.float32)
    eye = ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])
    c: dict[str, tuple[Path, tuple[str, str | None]]] = {}

    def add(case, path, kind="error", needle=None):
        c[case] = (path, (kind, needle if needle is not None else (path.name if kind == "error" else None)))

    # -- NIfTI: not NIfTI at all ---------------------------------------------------------------------------
    (f / "garbage.nii.gz").write_bytes(rng.bytes(3000))
    add("nifti_garbage", f / "garbage.nii.gz")
    (f / "empty.nii").write_bytes(b"")
    add("nifti_empty", f / "empty.nii", needle="empty.nii: file is empty")
    good = _nifti(f / "good.nii.gz", img, rows=eye)
    (f / "truncated.nii.gz").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    add("nifti_truncated_gzip", f / "truncated.nii.gz")
    add("nifti_bad_magic", _nifti(f / "badmagic.nii", img, rows=eye, patch={"magic": b"xyz"}))
    add("nifti_bad_datatype", _nifti(f / "baddtype.nii", img, rows=eye, patch={"datatype": 9999}))
    add(
        "nifti_dim0_out_of_range",
        _nifti(f / "dim8.nii", img, rows=eye, patch={"dim": [9, 16, 16, 8, 1, 1, 1, 1]}),
    )
    # -- NIfTI: declared size (checked before allocation) ------------------------------------------------------
    add(
        "nifti_declares_1_5gib_raw",
        _nifti(f / "liar.nii", img, shape=(20000, 20000), dtype=np.float32, payload=b""),
        needle="liar.nii: header declares 1.5 GiB",
    )
    add(
        "nifti_declares_1_5gib_gz",
        _nifti(f / "liar.nii.gz", img, shape=(20000, 20000), dtype=np.float32, payload=b"\0" * 4096),
        needle="liar.nii.gz: header declares 1.5 GiB",
    )
    add(
        "nifti_gz_stream_short",
        _nifti(
            f / "short.nii.gz", img, shape=(1024, 1024, 32), dtype=np.float32, payload=rng.bytes(4 * 1024**2)
        ),
        needle="compressed stream holds only",
    )
    add(
        "nifti_vox_offset_past_end",
        _nifti(f / "offset.nii", img, rows=eye, patch={"vox_offset": 10**9}),
        needle="offset.nii",
    )
    add(
        "nifti_over_voxel_cap",
        _nifti(f / "cap.nii", img, shape=(2048, 2048, 2048), dtype=np.uint8, payload=b""),
        needle="more than max_voxels",
    )
    add("nifti_zero_size_axis", _nifti(f / "zerodim.nii", img, shape=(16, 0, 8), payload=b""))
    add("nifti_1d", _nifti(f / "line.nii", img.ravel()[:64], shape=(64,)), needle="not a 2D or 3D image")
    add("nifti_true_4d", _nifti(f / "four.nii", rng.random((8, 8, 4, 3), dtype=np.float32)), needle="4D data")
    # -- NIfTI: geometry (validated at load; the error names the field) ----------------------------------------
    add(
        "nifti_parallel_axes",
        _nifti(f / "parallel.nii", img, rows=([1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0])),
        needle="parallel.nii: sform axes (srow_x/y/z) is singular",
    )
    add(
        "nifti_zero_axis",
        _nifti(f / "zeroaxis.nii", img, rows=([1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0])),
        needle="zeroaxis.nii: sform axis lengths",
    )
    add(
        "nifti_inf_origin",
        _nifti(f / "inforigin.nii", img, rows=([1, 0, 0, np.inf], [0, 1, 0, 0], [0, 0, 1, 0])),
        needle="inforigin.nii: sform offset (srow_x/y/z[3]) is not finite",
    )
    add(
        "nifti_nan_axes",
        _nifti(f / "nanaxes.nii", img, rows=([np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])),
        needle="nanaxes.nii: sform axes",
    )
    add(
        "nifti_sheared",
        _nifti(f / "sheared.nii", img, rows=([1, 0.4, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])),
        needle="sheared.nii: sform axes (srow_x/y/z) is sheared",
    )
    add(
        "nifti_zero_pixdim_loads", _nifti(f / "zeropix.nii", img, pixdim=(1.0, 0.0, 1.0)), kind="ok"
    )  # nibabel: 1 mm
    add("nifti_negative_pixdim_loads", _nifti(f / "negpix.nii", img, pixdim=(-1.0, 1.0, 1.0)), kind="ok")
    add(
        "nifti_nan_pixdim",
        _nifti(f / "nanpix.nii", img, pixdim=(np.nan, 1.0, 1.0)),
        needle="nanpix.nii: pixdim",
    )
    # -- NIfTI: voxel values ----------------------------------------------------------------------------------
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    add(
        "nifti_rgb",
        _nifti(f / "rgb.nii.gz", rgb, rows=eye),
        needle="rgb.nii.gz: header field datatype is RGB",
    )
    add(
        "nifti_complex",
        _nifti(f / "complex.nii", img.astype(np.complex64), rows=eye),
        needle="complex.nii: header field datatype",
    )
    nan = img.copy()
    nan[0, 0, 0] = np.nan
    add("nifti_nan_voxels", _nifti(f / "nanvox.nii", nan, rows=eye), needle="nanvox.nii: 1 voxels are NaN")
    add("nifti_inf_slope", _nifti(f / "infslope.nii", img, rows=eye, patch={"scl_slope": np.inf}), kind="ok")
    add(
        "nifti_beyond_float32",
        _nifti(f / "huge64.nii", img.astype(np.float64) * 1e300, rows=eye),
        needle="huge64.nii",
    )
    # -- MetaImage / NRRD ---------------------------------------------------------------------------------------
    meta = "ObjectType = Image\nNDims = 2\nDimSize = 16 16\nElementType = MET_FLOAT\n"
    (f / "garbage.mha").write_bytes(rng.bytes(2000))
    add("mha_garbage", f / "garbage.mha")
    add(
        "mha_declares_huge",
        _mha(
            f / "liar.mha",
            "ObjectType = Image\nNDims = 2\nDimSize = 20000 20000\n"
            "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n",
            b"\0" * 64,
        ),
        needle="liar.mha: header declares 1.5 GiB",
    )
    add(
        "mha_truncated",
        _mha(f / "trunc.mha", meta + "ElementDataFile = LOCAL\n", b"\0" * 100),
        needle="trunc.mha",
    )
    add(
        "mha_compressed_liar",
        _mha(
            f / "zliar.mha",
            "ObjectType = Image\nNDims = 2\nDimSize = 20000 20000\n"
            "ElementType = MET_FLOAT\nCompressedData = True\nElementDataFile = LOCAL\n",
            b"x\x9c" + b"\0" * 30,
        ),
        needle="zliar.mha",
    )
    add(
        "mhd_absolute_datafile",
        _mha(f / "abs.mhd", meta + "ElementDataFile = /etc/passwd\n"),
        needle="abs.mhd: ElementDataFile = '/etc/passwd'",
    )
    add(
        "mhd_traversal_datafile",
        _mha(f / "up.mhd", meta + "ElementDataFile = ../../../../etc/passwd\n"),
        needle="up.mhd: ElementDataFile",
    )
    add(
        "mhd_list_datafile",
        _mha(f / "list.mhd", meta + "ElementDataFile = LIST\n"),
        needle="list.mhd: ElementDataFile",
    )
    add(
        "mhd_missing_datafile",
        _mha(f / "missing.mhd", meta + "ElementDataFile = nothere.raw\n"),
        needle="missing.mhd",
    )
    raw = img[:, :, 0].astype(np.float32).tobytes()
    add(
        "mha_parallel_axes",
        _mha(f / "parallel.mha", meta + "TransformMatrix = 1 0 1 0\nElementDataFile = LOCAL\n", raw),
        needle="parallel.mha: TransformMatrix is singular",
    )
    add(
        "mha_inf_offset",
        _mha(f / "inf.mha", meta + "Offset = inf 0\nElementDataFile = LOCAL\n", raw),
        needle="inf.mha: Offset = 'inf 0' is not a list of finite numbers",
    )
    add(
        "mha_zero_spacing",
        _mha(f / "zerosp.mha", meta + "ElementSpacing = 0 1\nElementDataFile = LOCAL\n", raw),
        needle="zerosp.mha: ElementSpacing gives voxel size (0, 1)",
    )
    add(
        "mha_rgb",
        _mha(
            f / "rgb.mha",
            "ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n"
            "ElementNumberOfChannels = 3\nElementDataFile = LOCAL\n",
            b"\0" * 48,
        ),
        needle="rgb.mha: image has 3 components",
    )
    nrrd = "NRRD0004\ntype: float\ndimension: 2\nsizes: 16 16\nendian: little\nencoding: raw\n"
    add(
        "nrrd_nan_origin",
        _mha(f / "nan.nrrd", nrrd + "space dimension: 2\nspace origin: (nan,0)\n\n", raw),
        needle="nan.nrrd",
    )
    add(
        "nrrd_absolute_datafile",
        _mha(f / "abs.nhdr", nrrd + "data file: /etc/passwd\n\n"),
        needle="abs.nhdr: data file = '/etc/passwd'",
    )
    add("nrrd_truncated", _mha(f / "trunc.nrrd", nrrd + "\n", b"\0" * 10), needle="trunc.nrrd")
    add(
        "nrrd_declares_huge",
        _mha(
            f / "liar.nrrd",
            "NRRD0004\ntype: float\ndimension: 2\nsizes: 20000 20000\nendian: little\nencoding: gzip\n\n",
            gzip.compress(b"\0" * 100),
        ),
        needle="liar.nrrd",
    )
    (f / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(100))
    add("unknown_suffix", f / "photo.png", needle="photo.png: unknown image format")
    # -- DICOM zips (inspected before extraction) -----------------------------------------------------------------
    add(
        "zip_bomb_declared",
        _zip_with_sizes(
            f / "bomb.zip", {f"s{i}.dcm": _dicm(b"\0" * 64) for i in range(4)}, declared=900 * 1024**2
        ),
        needle="bomb.zip: zip expands to",
    )
    add(
        "zip_zeros_not_dicom",
        _zip_with_sizes(f / "zeros.zip", {f"z{i}.dcm": b"\0" * (8 * 1024**2) for i in range(6)}),
        needle="zeros.zip: no DICOM files",
    )
    add(
        "zip_many_members",
        _zip_with_sizes(f / "many.zip", {f"m{i}.dcm": b"x" for i in range(5200)}),
        needle="many.zip: zip holds 5,200 files",
    )
    add("zip_text_only", _zip_with_sizes(f / "text.zip", {"readme.txt": b"hello " * 100}), needle="text.zip")
    add(
        "zip_dicm_garbage",
        _zip_with_sizes(f / "noise.zip", {f"n{i}.dcm": _dicm(rng.bytes(300)) for i in range(300)}),
        needle="noise.zip",
    )
    add(
        "zip_traversal_names",
        _zip_with_sizes(
            f / "escape.zip",
            {"../../../escape.dcm": _dicm(rng.bytes(200)), "/tmp/abs_escape.dcm": _dicm(rng.bytes(200))},
        ),
        needle="escape.zip",
    )
    add(
        "zip_encrypted_flag",
        _zip_with_sizes(f / "locked.zip", {"a.dcm": _dicm(b"\0" * 64)}, flag=1),
        needle="locked.zip",
    )
    add(
        "zip_lying_size",
        _zip_with_sizes(f / "lying.zip", {"a.dcm": _dicm(rng.bytes(5000))}, declared=200),
        needle="lying.zip",
    )
    (f / "cut.zip").write_bytes((f / "noise.zip").read_bytes()[:5000])
    add("zip_truncated", f / "cut.zip", needle="cut.zip")
    return c


def write_labels(folder: Path) -> dict[str, tuple[Path, tuple[str, str | None]]]:
    """Label maps with hostile VALUES (the images themselves are valid 2D 32x32 NIfTI)."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    eye2 = ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])
    base = np.zeros((32, 32), np.int64)
    base[8:20, 8:20] = 1
    out: dict[str, tuple[Path, tuple[str, str | None]]] = {}
    for case, value in (("labels_65535", 65535), ("labels_2pow40", 2**40)):
        lab = base * value
        out[case] = (
            _nifti(f / f"{case}.nii.gz", lab.astype(np.int64), rows=eye2, dtype=np.int64),
            ("ok", None),
        )
    many = (np.arange(32 * 32).reshape(32, 32) % 10000).astype(np.int32) + 1
    many = np.kron(np.arange(1, 10001, dtype=np.int32).reshape(100, 100), np.ones((1, 1), np.int32))
    out["labels_10000"] = (_nifti(f / "labels_10000.nii.gz", many, rows=eye2), ("ok", None))
    neg = base.astype(np.int16) * -3
    out["labels_negative"] = (
        _nifti(f / "labels_negative.nii.gz", neg, rows=eye2),
        ("error", "labels_negative"),
    )
    frac = base.astype(np.float32) * 1.5
    out["labels_fractional"] = (
        _nifti(f / "labels_fractional.nii.gz", frac, rows=eye2),
        ("error", "not integers"),
    )
    return out
