"""The version of the regcore code that runs a batch task, as a short fingerprint.

A task's key (:attr:`regcore.batch.tasks.Task.key`) includes it, so a batch re-run with changed code registers
every pair again instead of reusing results the old code computed; a re-run with the same code (an interrupted
batch resumed) reuses them. Hashing regcore's ~200 source files takes a few milliseconds, once per process.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import regcore

__all__ = ["code_fingerprint"]


@functools.cache
def code_fingerprint() -> str:
    """12 hex digits: SHA-1 over ``regcore.__version__`` and each ``regcore/**/*.py`` file's relative path and
    bytes, in sorted path order. Changes with any edit to the package's Python code, not with data or weights."""
    root = Path(regcore.__file__).resolve().parent
    digest = hashlib.sha1(regcore.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
