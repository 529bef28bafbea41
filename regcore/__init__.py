"""regcore: the RegLab registration engine (PyTorch, CPU or GPU, 2D and 3D).

Never imports streamlit. Public entry points:
``regcore.io.load_image``, ``regcore.preprocess.resample_to``,
``regcore.methods.registry.get(name)``, ``regcore.metrics.evaluate``,
``regcore.data.load_pair`` / ``regcore.data.sample_pair``.
"""

from regcore.image import Geometry, Image, Landmarks

__all__ = ["Geometry", "Image", "Landmarks"]
__version__ = "0.1.0"
