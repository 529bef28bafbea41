"""Classical (instance-optimisation) methods and library baselines, one method a file.

Importing this package registers every method below with :mod:`regcore.methods.registry`.
Shared machinery, one concept a module: ``inputs`` (checks, device), ``pyramid`` (levels,
downsampling), ``filters`` / ``lncc`` (fast box filter, LNCC gradient), ``progress``, ``result``,
``greedy_kernels`` (fused numba kernels of fireants/demons), ``library_convert`` / ``sitk_progress``
(the SimpleITK / ITK / ANTs baselines).
"""

from regcore.methods.classical import (  # noqa: F401  (imported to register the methods)
    affine,
    ants,
    bspline,
    demons,
    dense,
    elastix,
    fireants,
    mind_convex,
    rigid,
    sitk_affine,
    sitk_bspline,
    sitk_demons,
    svf,
)
