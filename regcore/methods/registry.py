"""One registry of methods: name -> MethodSpec. The UI, CLI and benchmark all read it.

Methods register themselves at import time of their module; :func:`all_specs` imports
the built-in method packages lazily so ``import regcore`` stays light.
"""

from __future__ import annotations

import enum
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from regcore.config import describe, from_overrides


class Family(enum.StrEnum):
    AFFINE = "affine"
    DEFORMABLE = "deformable"
    DIFFEOMORPHIC = "diffeomorphic"
    BASELINE = "library baseline"
    LEARNED = "learned"


class Supervision(enum.StrEnum):
    NONE = "none"  # classical: optimises one pair, no training
    UNSUPERVISED = "unsupervised"
    WEAK = "weakly supervised"
    FULL = "fully supervised"
    DUAL = "dual"


@dataclass(frozen=True)
class MethodSpec:
    """Registry entry.

    Attributes:
        name: unique id used by CLI/UI (``"affine"``, ``"svf"``, ...).
        title: display name.
        config_cls: frozen dataclass of parameters (see ``regcore.config.param``).
        factory: ``() -> Method``; may raise ``MissingExtraError`` for optional libraries.
        family, supervision: closed sets above.
        dims: supported spatial dims, e.g. ``(2, 3)``.
        needs_training: True for learned methods that need weights.
        description: one or two sentences for the UI.
        requires: optional extra name (e.g. ``"elastix"``) that must be installed.
        paper: the reference to cite (learned families), empty for most classical methods.
        auto_settings: ``(config, image shape in voxels, spacing in mm) -> {field: value}``, the values the
            config's "auto" fields take on an image of that shape (``{}`` when none is auto); None for
            methods without image-dependent defaults. The Register page shows them before a run.
    """

    name: str
    title: str
    config_cls: type
    factory: Callable[[], Any]
    family: Family
    supervision: Supervision = Supervision.NONE
    dims: tuple[int, ...] = (2, 3)
    needs_training: bool = False
    description: str = ""
    requires: str | None = None
    paper: str = ""
    auto_settings: Callable[[Any, tuple[int, ...], tuple[float, ...]], dict[str, Any]] | None = None

    def make_config(self, overrides: dict[str, Any] | None = None):
        return from_overrides(self.config_cls, overrides or {})

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "family": str(self.family),
            "supervision": str(self.supervision),
            "dims": list(self.dims),
            "needs_training": self.needs_training,
            "description": self.description,
            "requires": self.requires,
            "available": self.available(),
            "paper": self.paper,
            "parameters": [p.to_json() for p in describe(self.config_cls)],
        }

    def available(self) -> bool:
        """False when an optional extra this method needs is not installed."""
        if not self.requires:
            return True
        from regcore.extras import extra_available

        return extra_available(self.requires)


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


_REGISTRY: dict[str, MethodSpec] = {}

# Modules whose import registers built-in methods. Each module calls ``register_method``.
BUILTIN_MODULES = (
    "regcore.methods.classical",
    "regcore.methods.learned",
)
_loaded = False


def register_method(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


_LOAD_LOCK = threading.RLock()


def _load_builtins() -> None:
    """Import the built-in method modules once. Thread-safe: a second browser session asking while the
    first is still importing waits for the full registry instead of seeing it half-empty."""
    global _loaded
    if _loaded:
        return
    with _LOAD_LOCK:
        if _loaded:
            return
        for mod in BUILTIN_MODULES:
            importlib.import_module(mod)
        from regcore.methods.learned.family import load_plugins

        load_plugins()
        _loaded = True


DEFAULT_DEFORMABLE = {2: "demons", 3: "fireants"}
"""The default deformable method per image dimension, chosen with ``benchmarks/dev_benchmark.py``: on 2D
brain slices demons beats SimpleITK demons and ANTs SyN on more pairs (tune and held-out) with smoother
fields (fireants has the higher mean Dice but wins fewer pairs); in 3D fireants has the best Dice."""


def all_specs() -> list[MethodSpec]:
    """All registered methods, in registration order."""
    _load_builtins()
    return list(_REGISTRY.values())


def get(name: str) -> MethodSpec:
    """Look up a method by name; ValueError lists the known names.

    A classical method is found after importing the classical package alone (~0.07 s less than importing
    every learned family too: ``regcore register --method fireants`` never needs them).
    """
    if name not in _REGISTRY and not _loaded:
        importlib.import_module(BUILTIN_MODULES[0])
    if name not in _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(_REGISTRY)}") from None
