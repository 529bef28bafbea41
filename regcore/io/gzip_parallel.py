"""Gzip a file on several threads: a multi-member gzip stream (RFC 1952) that every gzip reader reads.

The input is cut into fixed-size chunks, each compressed on its own thread (zlib releases the GIL)
into a complete gzip member; the members are written in order. ``gzip -d``, zlib's ``gzread``
(ITK/SimpleITK's NIfTI reader) and Python's ``gzip`` module (nibabel) all read concatenated members
as one stream. A little larger than single-stream gzip (each chunk starts a fresh dictionary).
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK_BYTES = 4 << 20
"""Uncompressed bytes per gzip member (4 MiB: dictionary restarts cost < 0.1 % in size)."""


def _member(chunk: bytes, level: int) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31 = gzip header and trailer
    return packer.compress(chunk) + packer.flush()


def gzip_file(
    src: str | os.PathLike, dst: str | os.PathLike, *, level: int = 1, workers: int | None = None
) -> Path:
    """Compress ``src`` into the gzip file ``dst`` on ``workers`` threads (default: all cores).

    level: zlib level 1 (fastest) .. 9 (smallest). Memory: about ``2 * workers`` chunks in flight.
    """
    if not 1 <= int(level) <= 9:
        raise ValueError(f"level must be 1..9, got {level!r}")
    workers = max(1, int(workers or os.cpu_count() or 1))
    src, dst = Path(src), Path(dst)
    with open(src, "rb") as fin, open(dst, "wb") as fout, ThreadPoolExecutor(workers) as pool:
        pending, wrote = [], False
        while True:
            chunk = fin.read(CHUNK_BYTES)
            if chunk:
                pending.append(pool.submit(_member, chunk, int(level)))
            while pending and (len(pending) >= 2 * workers or not chunk):
                fout.write(pending.pop(0).result())
                wrote = True
            if not chunk:
                break
        if not wrote:  # an empty input is still one (empty) gzip member
            fout.write(_member(b"", int(level)))
    return dst
