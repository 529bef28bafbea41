"""Learned registration families (see :mod:`regcore.methods.learned.family` for the contract).

Every module of this package except the contract (``family``) and the shared inference
(``inference``) is one family; importing the package imports each of them, which registers the
family and its registration method. Adding a family = adding one file here (or a plug-in module).
"""

import importlib
import pkgutil

INFRASTRUCTURE = frozenset({"family", "inference", "refine", "pointwise"})

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in INFRASTRUCTURE and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
