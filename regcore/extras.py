"""Optional extras (heavy library baselines) and clear messages when they are missing."""

from __future__ import annotations

import importlib.util

EXTRAS = {
    "elastix": ("itk", "pip install 'reglab[elastix]'  (itk-elastix)"),
    "ants": ("ants", "make bench-env  (antspyx pins numpy<2.4, so it lives in its own venv .venv-bench)"),
}


def extra_available(name: str) -> bool:
    module, _ = EXTRAS[name]
    if name == "elastix":
        return importlib.util.find_spec("itk") is not None and importlib.util.find_spec("itk_elastix") is not None
    return importlib.util.find_spec(module) is not None


def require_extra(name: str, method: str) -> None:
    """Raise MissingExtraError with the install command when extra ``name`` is absent."""
    from regcore.methods.registry import MissingExtraError
    if not extra_available(name):
        _, how = EXTRAS[name]
        raise MissingExtraError(f"method {method!r} needs the optional extra '{name}', which is not installed: {how}")
