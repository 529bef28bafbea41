"""Optional extras (heavy library baselines) and clear messages when they are missing."""

from __future__ import annotations

import importlib.metadata

# extra name -> (distribution that must be installed, how to install it)
EXTRAS = {
    "elastix": (
        "itk-elastix",
        "pip install -c constraints.txt 'reglab[elastix]'  (itk-elastix), or `make bench-env`",
    ),
    "ants": ("antspyx", "make bench-env  (antspyx pins numpy<2.4, so it lives in its own venv .venv-bench)"),
}


def extra_available(name: str) -> bool:
    """True when the distribution behind optional extra ``name`` is installed (checked without importing it)."""
    if name not in EXTRAS:
        raise ValueError(f"unknown extra {name!r}; known extras: {sorted(EXTRAS)}")
    dist, _ = EXTRAS[name]
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def require_extra(name: str, method: str) -> None:
    """Raise MissingExtraError with the install command when extra ``name`` is absent."""
    from regcore.methods.registry import MissingExtraError

    if not extra_available(name):
        _, how = EXTRAS[name]
        raise MissingExtraError(
            f"method {method!r} needs the optional extra '{name}', which is not installed: {how}"
        )
