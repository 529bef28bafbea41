"""regcore: the RegLab registration engine (PyTorch, CPU or GPU, 2D and 3D).

Never imports streamlit. Public entry points:
``regcore.io.load_image``, ``regcore.preprocess.resample_to``,
``regcore.methods.registry.get(name)``, ``regcore.metrics.evaluate``,
``regcore.data.load_pair`` / ``regcore.data.sample_pair``.

``Geometry``, ``Image`` and ``Landmarks`` are imported on first use (PEP 562), so ``import regcore``
(and ``regcore --help``) does not pay for importing torch.
"""

from __future__ import annotations

__all__ = ["Geometry", "Image", "Landmarks"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        from regcore import image

        return getattr(image, name)
    raise AttributeError(f"module 'regcore' has no attribute {name!r}")
