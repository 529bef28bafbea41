"""regcore never imports streamlit: import every regcore module in a fresh interpreter and check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, pkgutil, sys
import regcore
from regcore.methods.registry import MissingExtraError

imported, skipped = [], []
for info in pkgutil.walk_packages(regcore.__path__, prefix="regcore."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except (ImportError, MissingExtraError) as exc:  # optional extras (elastix, ants, ...) may be absent
        missing = getattr(exc, "name", None) or ""
        if missing.startswith("regcore") and not isinstance(exc, MissingExtraError):
            raise  # a broken internal import is a real failure
        skipped.append(f"{info.name}: {exc}")
for required in ("regcore.io", "regcore.preprocess", "regcore.image"):
    assert required in imported, (required, skipped)
assert "streamlit" not in sys.modules, "a regcore module imported streamlit"
print(len(imported), "modules imported;", len(skipped), "skipped:", skipped)
"""


def test_importing_every_regcore_module_never_imports_streamlit():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "modules imported" in proc.stdout
