"""Declared-size checks made from a header BEFORE any voxel buffer is allocated.

A 300-byte file may declare a 20000 x 20000 float32 image (under the voxel cap): readers allocate
the declared buffer first and only then find the data missing. Here the declared byte count is
checked against what the file can hold:

* uncompressed data (``.nii``, raw MetaImage/NRRD): against the file size, exactly;
* gzip/zlib data: impossible when it exceeds the deflate limit (1032:1) of the compressed size;
  otherwise the reader inflates at most the declared bytes (never more) and a short stream is refused
  (:func:`check_inflated_size`).

Detached headers (``.mhd``, ``.nhdr``) name their data file; it must be a plain file name in the
header's own folder, so a header can never make regcore read another file on the machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from regcore.io.errors import ImageIOError

DEFLATE_MAX_RATIO = 1032
"""Largest expansion deflate can achieve (zlib technical details), plus no slack needed beyond 1 MiB."""

META_TYPES = {
    "MET_UCHAR": 1,
    "MET_CHAR": 1,
    "MET_USHORT": 2,
    "MET_SHORT": 2,
    "MET_UINT": 4,
    "MET_INT": 4,
    "MET_ULONG": 8,
    "MET_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_LONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t", "char"),
    2: (
        "short",
        "short int",
        "signed short",
        "signed short int",
        "int16",
        "int16_t",
        "ushort",
        "unsigned short",
        "unsigned short int",
        "uint16",
        "uint16_t",
    ),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: (
        "longlong",
        "long long",
        "long long int",
        "signed long long",
        "signed long long int",
        "int64",
        "int64_t",
        "ulonglong",
        "unsigned long long",
        "unsigned long long int",
        "uint64",
        "uint64_t",
        "double",
    ),
}
META_GEOMETRY = {
    "offset": "Offset",
    "origin": "Origin",
    "position": "Position",
    "elementspacing": "ElementSpacing",
    "elementsize": "ElementSize",
    "transformmatrix": "TransformMatrix",
    "rotation": "Rotation",
    "orientation": "Orientation",
    "centerofrotation": "CenterOfRotation",
}
NRRD_GEOMETRY = {
    "space origin": "space origin",
    "space directions": "space directions",
    "spacings": "spacings",
    "thicknesses": "thicknesses",
}
HEADER_LIMIT = 64 * 1024
"""Text headers longer than this are not parsed here (left to the reader)."""


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def declared_bytes(shape, itemsize: int, channels: int = 1) -> int:
    """Bytes of voxel data a header declares (Python ints: no overflow)."""
    total = int(itemsize) * int(channels)
    for s in shape:
        total *= max(int(s), 0)
    return total


def check_raw_size(path: Path, needed: int, available: int, what: str = "voxel data") -> None:
    """Uncompressed data: ``needed`` declared bytes must fit in the ``available`` bytes of the file."""
    if needed > available:
        raise ImageIOError(
            f"{path}: header declares {_human(needed)} of {what} but the file holds only "
            f"{_human(max(available, 0))}: the file is truncated or its header is wrong"
        )


def check_compressed_size(path: Path, needed: int, compressed: int) -> None:
    """Compressed data: refuse at once a declared size that ``compressed`` bytes cannot inflate to."""
    if needed > DEFLATE_MAX_RATIO * max(compressed, 1) + (1 << 20):
        raise ImageIOError(
            f"{path}: header declares {_human(needed)} of voxel data, more than {_human(compressed)} "
            f"of compressed data can hold (at most {DEFLATE_MAX_RATIO}:1): the file is truncated or "
            "its header is wrong"
        )


def check_inflated_size(path: Path, needed: int, inflated: int) -> None:
    """Compressed data that inflated to ``inflated`` bytes must hold the ``needed`` bytes its header declares."""
    if inflated < needed:
        raise ImageIOError(
            f"{path}: header declares {_human(needed)} of data but the compressed stream holds only "
            f"{_human(inflated)}: the file is truncated"
        )


def nifti_declared_bytes(image, shape) -> int:
    """Bytes a single-file NIfTI (a nibabel image) must hold uncompressed: up to the end of its voxel data.

    The data starts where nibabel reads it (``vox_offset``, or 352 bytes plus extensions when unset).
    """
    offset = int(getattr(image.dataobj, "offset", image.header.get_data_offset()))
    return offset + declared_bytes(shape, image.header.get_data_dtype().itemsize)


def _finite_fields(path: Path, kv: dict[str, str], names: dict[str, str]) -> None:
    """Geometry fields of a text header must hold finite numbers (some readers turn ``inf`` into 0)."""
    for key, field in names.items():
        if key not in kv:
            continue
        tokens = [t for t in re.split(r"[(),\s]+", kv[key]) if t and t.lower() != "none"]
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            values = [float("nan")]
        if not all(np.isfinite(values)):
            raise ImageIOError(
                f"{path}: {field} = {kv[key]!r} is not a list of finite numbers; fix the header"
            )


def confined_data_file(path: Path, name: str, field: str) -> Path:
    """A detached header's data file: a plain file name in the header's folder, else ImageIOError."""
    name = name.strip()
    bad = (
        not name
        or name.upper() == "LIST"
        or "%" in name
        or " " in name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or re.match(r"^[A-Za-z]:", name) is not None
    )
    if bad:
        raise ImageIOError(
            f"{path}: {field} = {name!r}; regcore reads only a data file named plainly in the "
            "header's own folder (no paths, lists or patterns)"
        )
    return path.parent / name


def _header_text(path: Path, terminator) -> tuple[list[str], int, bool]:
    """Header lines up to (and including) the first line ``terminator`` accepts, their byte length, and
    whether that line was found (within :data:`HEADER_LIMIT` bytes)."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_LIMIT)
    lines, pos = [], 0
    for raw in head.splitlines(keepends=True):
        pos += len(raw)
        line = raw.decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if terminator(line):
            return lines, pos, raw.endswith(b"\n")
    return lines, pos, False


def check_metaimage(path: Path) -> None:
    """MetaImage (.mha/.mhd): confine ElementDataFile and check the declared size against the data."""
    lines, header_len, found = _header_text(
        path, lambda ln: ln.split("=", 1)[0].strip().lower() == "elementdatafile"
    )
    kv = {}
    for ln in lines:
        key, sep, value = ln.partition("=")
        if sep:
            kv[key.strip().lower()] = value.strip()
    _finite_fields(path, kv, META_GEOMETRY)
    if "elementdatafile" not in kv:
        return  # no data file named: SimpleITK reports the broken header
    data_name = kv["elementdatafile"]
    local = data_name.upper() == "LOCAL"
    data = path if local else confined_data_file(path, data_name, "ElementDataFile")
    try:
        shape = [int(v) for v in kv.get("dimsize", "").split()]
        itemsize = META_TYPES[kv.get("elementtype", "").upper()]
        channels = int(kv.get("elementnumberofchannels", "1"))
        skip = int(kv.get("headersize", "0") or 0)
    except (ValueError, KeyError):
        return  # let SimpleITK name what is wrong
    if skip != 0 or not shape or (local and not found):
        return
    needed = declared_bytes(shape, itemsize, channels)
    if not data.is_file():
        raise ImageIOError(f"{path}: ElementDataFile {data.name!r} not found next to the header")
    available = data.stat().st_size - (header_len if local else 0)
    if kv.get("compresseddata", "False").lower() == "true":
        check_compressed_size(path, needed, available)
    else:
        check_raw_size(path, needed, available)


def check_nrrd(path: Path) -> None:
    """NRRD (.nrrd/.nhdr): confine the detached data file and check the declared size."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"NRRD":
            return  # not NRRD: SimpleITK reports it
    lines, header_len, terminated = _header_text(path, lambda ln: ln.strip() == "")
    kv = {}
    for ln in lines[1:]:
        if ln.startswith("#") or ":=" in ln:
            continue
        key, sep, value = ln.partition(":")
        if sep:
            kv[key.strip().lower()] = value.strip()
    _finite_fields(path, kv, NRRD_GEOMETRY)
    data_name = kv.get("data file", kv.get("datafile"))
    data = path if data_name is None else confined_data_file(path, data_name, "data file")
    if data_name is None and not terminated:
        return  # attached data whose header end is not found: SimpleITK reports it
    try:
        shape = [int(v) for v in kv.get("sizes", "").split()]
        itemsize = next(k for k, names in NRRD_TYPES.items() if kv.get("type", "").lower() in names)
    except (ValueError, StopIteration):
        return
    if not shape or "byte skip" in kv or "line skip" in kv:
        return
    if not data.is_file():
        raise ImageIOError(f"{path}: data file {data.name!r} not found next to the header")
    available = data.stat().st_size - (header_len if data_name is None else 0)
    encoding = kv.get("encoding", "raw").lower()
    needed = declared_bytes(shape, itemsize)
    if encoding == "raw":
        check_raw_size(path, needed, available)
    elif encoding in ("gzip", "gz"):
        check_compressed_size(path, needed, available)
    elif encoding in ("ascii", "text", "txt"):
        check_raw_size(path, 2 * int(np.prod(shape, dtype=object)) - 1, available, "text voxel values")
