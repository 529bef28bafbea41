"""Reads confined to allowed folders (a server used by many people).

Inside ``with confined_to(root, ...)``, every file regcore.io opens (images, DICOM slices, detached
data files, landmark and label CSVs) must resolve, after following symlinks, to a path inside one of
the roots; anything else is refused with a message naming the file. The setting lives in a
``ContextVar``, so it holds for the thread (browser session) that set it and no other.

:func:`resolve_under` is the same rule for a folder a user typed: ``..`` and symlinks that lead out of
the root are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_ROOTS: ContextVar[tuple[Path, ...] | None] = ContextVar("regcore_read_roots", default=None)


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _inside(real: Path, root: Path) -> bool:
    return real == root or root in real.parents


@contextmanager
def confined_to(roots: Sequence[str | os.PathLike]) -> Iterator[tuple[Path, ...]]:
    """Allow reads only inside ``roots`` (resolved) for the rest of the block, in this context only."""
    resolved = tuple(_real(r) for r in roots)
    if not resolved:
        raise ValueError("confined_to needs at least one root folder")
    token = _ROOTS.set(resolved)
    try:
        yield resolved
    finally:
        _ROOTS.reset(token)


def current_roots() -> tuple[Path, ...] | None:
    """The roots reads are confined to here, or None when unconfined."""
    return _ROOTS.get()


def outside_roots(path: str | os.PathLike) -> str | None:
    """None when ``path`` may be read here; else the reason (it resolves outside every allowed root)."""
    roots = _ROOTS.get()
    if roots is None:
        return None
    real = _real(path)
    if any(_inside(real, r) for r in roots):
        return None
    via = " (through a symbolic link)" if real != Path(os.path.abspath(os.fspath(path))) else ""
    return f"is outside the allowed data folders{via}; allowed: {', '.join(str(r) for r in roots)}"


def resolve_under(root: str | os.PathLike, relative: str | os.PathLike = "") -> Path:
    """``root / relative`` resolved (symlinks followed); ValueError when it leaves ``root``."""
    base = _real(root)
    text = os.fspath(relative).strip()
    if "\x00" in text:
        raise ValueError("folder name contains a NUL character")
    if Path(text).is_absolute():
        raise ValueError(f"give a folder inside {base}, not an absolute path ({text!r})")
    target = _real(base / text)
    if not _inside(target, base):
        raise ValueError(f"{text!r} leads outside the data folder {base} (.. or a symbolic link); refused")
    return target
