"""DICOM series from a folder or a .zip, read with SimpleITK/GDCM.

A zip is inspected BEFORE anything is extracted: at most :data:`MAX_ZIP_MEMBERS` members, a total
uncompressed size within the budget, and only members that start with the DICOM preamble (``DICM``
at byte 128) are extracted, streamed with a running byte count into a private temporary folder
under flat numbered names (no path from the archive is ever used). A zip bomb or a zip of
non-DICOM files is refused in milliseconds with one line naming the zip.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from regcore.image import Geometry
from regcore.io.capture import simpleitk
from regcore.io.errors import ImageIOError, check_voxels, first_line
from regcore.io.geometry import DICOM
from regcore.io.sitk_arrays import array_from_sitk

MAX_ZIP_MEMBERS = 5000
"""Most files a DICOM zip may hold (a thin-slice CT series has ~1000-2000)."""
ZIP_MAX_BYTES = 1024**3
"""Most bytes a DICOM zip may expand to (also limited to 4 bytes a voxel of ``max_voxels`` + 64 KiB a file)."""
MAX_SCAN_DIRS = 256
"""Most sub-folders searched for DICOM series in a folder."""
PREAMBLE = 132
CHUNK = 1 << 20


def _budget(max_voxels: int, members: int) -> int:
    return min(ZIP_MAX_BYTES, 4 * int(max_voxels) + 65536 * members)


def _human(n: int) -> str:
    return f"{n / 1024**2:,.1f} MiB" if n >= 1024**2 else f"{n:,} bytes"


def inspect_zip(path: Path, zf: zipfile.ZipFile, max_voxels: int) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """The members to extract (DICOM files) and notes about the rest; ImageIOError for a hostile zip."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > MAX_ZIP_MEMBERS:
        raise ImageIOError(
            f"{path}: zip holds {len(infos):,} files, more than {MAX_ZIP_MEMBERS:,}; zip one DICOM "
            "series per archive"
        )
    budget = _budget(max_voxels, len(infos))
    total = sum(i.file_size for i in infos)
    if total > budget:
        raise ImageIOError(
            f"{path}: zip expands to {_human(total)}, more than the budget of {_human(budget)} for "
            "one DICOM series; refusing to extract it"
        )
    keep, skipped = [], 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ImageIOError(
                f"{path}: zip member {info.filename!r} is encrypted; extract it yourself first"
            )
        if info.file_size < PREAMBLE:
            skipped += 1
            continue
        with zf.open(info) as fh:
            head = fh.read(PREAMBLE)
        if head[128:132] == b"DICM":
            keep.append(info)
        else:
            skipped += 1
    if not keep:
        raise ImageIOError(
            f"{path}: no DICOM files in the zip: none of its {len(infos):,} files starts with the "
            "DICOM preamble ('DICM' at byte 128)"
        )
    notes = [f"{skipped} non-DICOM file(s) in the zip ignored"] if skipped else []
    return keep, notes


def extract_members(
    path: Path, zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], dest: Path, max_voxels: int
) -> None:
    """Stream ``members`` into ``dest`` as ``00000.dcm, ...``, counting real bytes against the budget."""
    budget, written = _budget(max_voxels, len(members)), 0
    for k, info in enumerate(members):
        with zf.open(info) as src, open(dest / f"{k:05d}.dcm", "wb") as dst:
            got = 0
            while block := src.read(CHUNK):
                got += len(block)
                written += len(block)
                if got > info.file_size or written > budget:
                    raise ImageIOError(
                        f"{path}: zip member {info.filename!r} expands beyond its declared size or "
                        "the budget; refusing the archive"
                    )
                dst.write(block)


def series_in(path: Path, root: Path) -> list[tuple[Path, str, list[str]]]:
    """``(folder, series UID, files)`` of every DICOM series in ``root`` and its sub-folders."""
    sitk = simpleitk()

    folders = [root]
    for p in sorted(root.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            folders.append(p)
            if len(folders) > MAX_SCAN_DIRS:
                raise ImageIOError(
                    f"{path}: more than {MAX_SCAN_DIRS} sub-folders to search for DICOM files; "
                    "point to the series folder itself"
                )
    found = []
    for folder in folders:
        for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
            found.append((folder, sid, list(files)))
    return found


def read_dicom_dir(path: Path, root: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    """The largest DICOM series under ``root`` (``path`` names the input in messages)."""
    sitk = simpleitk()

    series = series_in(path, root)
    if not series:
        raise ImageIOError(f"{path}: no DICOM series found (expected a folder or .zip of .dcm slices)")
    series.sort(key=lambda s: -len(s[2]))
    _, sid, files = series[0]
    meta: dict = {"format": "dicom", "series_uid": sid, "warnings": []}
    if len(series) > 1:
        meta["warnings"].append(
            f"{len(series)} DICOM series found; loaded the largest ({len(files)} slices, UID {sid})"
        )
    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    try:
        info.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageIOError(
            f"{path}: unreadable DICOM slice {Path(files[0]).name} ({first_line(exc)})"
        ) from exc
    check_voxels(path, (*info.GetSize()[:2], len(files)), max_voxels)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: DICOM series could not be read ({first_line(exc)})") from exc
    data, geometry = array_from_sitk(
        path, image, tuple(image.GetSize()), image.GetNumberOfComponentsPerPixel(), DICOM
    )
    return data, geometry, meta


def read_dicom_zip(path: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    """A DICOM series from a zip: inspected, then only its DICOM members extracted to a private temp folder."""
    tmp = None
    try:
        with zipfile.ZipFile(path) as zf:
            members, notes = inspect_zip(path, zf, max_voxels)
            tmp = Path(tempfile.mkdtemp(prefix="regcore_dicom_"))
            extract_members(path, zf, members, tmp, max_voxels)
        data, geometry, meta = read_dicom_dir(path, tmp, max_voxels)
        meta["warnings"] = notes + meta["warnings"]
        return data, geometry, meta
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise ImageIOError(f"{path}: not a readable zip archive ({first_line(exc)})") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
