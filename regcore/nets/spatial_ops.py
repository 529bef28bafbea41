"""The spatial operations learned models use, taken from ``regcore.spatial`` when present.

``integrate_svf``, ``affine_to_displacement``, ``resize_image``, ``resize_field`` follow
regcore's conventions (fields ``(B, ndim, *S)`` in voxels, fixed -> moving). While a public
module is missing, a private fallback (:mod:`regcore.nets._spatial_fallback`) stands in.
"""

from __future__ import annotations

from regcore.nets import _spatial_fallback as _fb

try:
    from regcore.spatial.svf import integrate_svf
except ImportError:  # pragma: no cover - depends on the spatial helper's progress
    integrate_svf = _fb.integrate_svf
try:
    from regcore.spatial.affine import affine_to_displacement
except ImportError:  # pragma: no cover
    affine_to_displacement = _fb.affine_to_displacement
# Resizing stays tensor-level and corner-aligned (align_corners=True, like grid.py) so training
# and inference resample identically; cross-checked against scipy.ndimage.zoom in tests.
resize_field, resize_image = _fb.resize_field, _fb.resize_image

__all__ = ["integrate_svf", "affine_to_displacement", "resize_field", "resize_image"]
