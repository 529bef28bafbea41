"""Outputs written all-or-nothing: a failed command never leaves partial results behind.

``with atomic_dir(out) as tmp:`` writes every file into a hidden ``out/.partial-*`` folder; when the
block succeeds each file is moved into ``out`` with ``os.replace`` (atomic per file, nothing is
recomputed), and when it raises the hidden folder is removed, together with ``out`` itself if the
block created it. Files already in ``out`` that the block does not write are left alone, so
``--out .`` never deletes anything; everything is written inside ``out``, never beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_PREFIX = ".partial-"


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A private folder inside ``target`` to write into; its files land in ``target`` only on success."""
    out = Path(target)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    missing = []
    for p in (out, *out.parents):
        if p.exists():
            break
        missing.append(p)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder {out} ({exc.strerror or exc})") from None
    tmp = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=out))
    try:
        yield tmp
        for f in sorted(tmp.iterdir()):
            dest = out / f.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(f, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in missing:  # only the folders this call created, innermost first, and only when empty
            try:
                p.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(tmp, ignore_errors=True)
