"""Classical (instance-optimisation) methods and library baselines.

Importing this package registers every method module listed in ``METHOD_MODULES``.
"""

import importlib
import importlib.util

METHOD_MODULES = (
    "affine", "dense", "svf", "bspline", "demons", "fireants", "convexadam",
    "sitk_baselines", "elastix", "ants",
)

for _name in METHOD_MODULES:
    _full = f"{__name__}.{_name}"
    if importlib.util.find_spec(_full) is not None:
        importlib.import_module(_full)
