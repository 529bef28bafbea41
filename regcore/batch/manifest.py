"""Pair references: a registration pair named by file paths, and the CSV manifest that lists them.

A :class:`PairRef` holds paths only (absolute after :func:`manifest_refs`); the images are loaded by
the worker that runs the task, so the data must be reachable from every worker (e.g. on a shared
filesystem). An in-memory ``regcore.data.Pair`` is the alternative (shipped to the worker by the
engine).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["PairRef", "manifest_refs"]


@dataclass(frozen=True)
class PairRef:
    """A pair by file paths (absolute after :func:`manifest_refs`); loaded where the task runs."""

    name: str
    fixed: str
    moving: str
    fixed_labels: str | None = None
    moving_labels: str | None = None
    fixed_landmarks: str | None = None
    moving_landmarks: str | None = None
    label_names: str | None = None
    stamps: tuple[tuple[int, int], ...] = ()
    """``(size in bytes, modification time in ns)`` of each file above when the pair was listed
    (:func:`file_stamps`): part of :meth:`identity`, so a batch re-run after a file changed registers it again."""

    def load(self):
        """The ``regcore.data.Pair`` (raises ``ValueError`` naming the file that failed)."""
        from regcore.data.folder import load_pair

        files = {k: v for k, v in asdict(self).items() if k not in ("name", "stamps")}
        return load_pair(**files, name=self.name)

    def identity(self) -> dict[str, Any]:
        return asdict(self)


def file_stamps(paths: Mapping[str, str | None]) -> tuple[tuple[int, int], ...]:
    """``(size, mtime_ns)`` of each given path in ``paths``' order (``(-1, -1)`` for one that cannot be read)."""
    stamps = []
    for path in paths.values():
        if path:
            try:
                st = os.stat(path)
                stamps.append((int(st.st_size), int(st.st_mtime_ns)))
            except OSError:
                stamps.append((-1, -1))
    return tuple(stamps)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def manifest_refs(manifest: str | os.PathLike) -> tuple[list[PairRef], list[str]]:
    """The pairs of a CSV manifest as :class:`PairRef` (nothing is loaded) and per-row error messages.

    Columns as :func:`regcore.data.load_manifest`; relative paths resolve against the CSV's folder. A row
    whose files do not exist is reported in the errors and left out; unreadable files surface later as
    failed tasks.
    """
    from regcore.data.folder import MANIFEST_COLUMNS

    p = Path(manifest)
    if not p.is_file():
        raise ValueError(f"pairs manifest must be an existing CSV file, got {str(p)!r}")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{p}: not a readable CSV manifest ({exc})") from exc
    header = [(h or "").strip().lower() for h in (rows[0].keys() if rows else [])]
    if not rows or not {"fixed", "moving"} <= set(header):
        raise ValueError(
            f"{p}: a pairs manifest needs a header with at least 'fixed,moving' "
            f"(all columns: {','.join(MANIFEST_COLUMNS)}), got {header}"
        )
    refs, errors = [], []
    unknown = set(header) - set(MANIFEST_COLUMNS)
    if unknown:
        errors.append(
            f"{p}: unknown column(s) {sorted(unknown)} ignored; known: {','.join(MANIFEST_COLUMNS)}"
        )
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        paths = {k: str((p.parent / row[k]).resolve()) if row.get(k) else None for k in MANIFEST_COLUMNS[1:]}
        if not paths["fixed"] or not paths["moving"]:
            errors.append(f"{p}: line {line}: 'fixed' and 'moving' must both be given")
            continue
        missing = [f"{k}={row[k]}" for k, v in paths.items() if v and not Path(v).exists()]
        if missing:
            errors.append(f"{p}: line {line}: file(s) not found: {', '.join(missing)}")
            continue
        name = row.get("name") or f"{_stem(paths['fixed'])} <- {_stem(paths['moving'])}"
        refs.append(PairRef(name=name, **paths, stamps=file_stamps(paths)))
    return refs, errors
