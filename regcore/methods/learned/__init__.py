"""Learning-based methods (networks + weights), registered like every other method."""

import importlib
import importlib.util

METHOD_MODULES = ("voxelmorph", "transmorph", "affine_net")

for _name in METHOD_MODULES:
    _full = f"{__name__}.{_name}"
    if importlib.util.find_spec(_full) is not None:
        importlib.import_module(_full)
