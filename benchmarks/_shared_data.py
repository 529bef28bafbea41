"""Where the benchmark scripts find ../shared/data (env ``REGLAB_SHARED_DATA`` overrides), and the skip line."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("REGLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_folder(name: str) -> Path | None:
    """``SHARED / name`` when it exists; otherwise print why the benchmark is skipped and return None."""
    folder = SHARED / name
    if folder.is_dir():
        return folder
    print(f"skipped: {folder} not found (set REGLAB_SHARED_DATA)")
    return None
