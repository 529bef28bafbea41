"""SimpleITK demons baseline: FastSymmetricForcesDemons or DiffeomorphicDemons with Gaussian
displacement smoothing, on a shrink pyramid (optional histogram matching first).

The demons field (LPS mm on the fixed grid, fixed point -> moving point) becomes regcore's
``(1, ndim, *S)`` displacement in fixed voxels, fixed -> moving (``library_convert``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch

from regcore.config import param
from regcore.image import Image
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical.library_convert import sitk_field_to_voxels, sitk_pair
from regcore.methods.classical.pyramid import halving_factors
from regcore.methods.classical.result import build_result
from regcore.methods.classical.sitk_progress import attach_progress, raise_if_cancelled
from regcore.methods.registry import Family, MethodSpec, register_method


class SitkDemonsVariant(enum.StrEnum):
    FAST_SYMMETRIC = "fast_symmetric"
    DIFFEOMORPHIC = "diffeomorphic"


@dataclass(frozen=True)
class SitkDemonsConfig:
    variant: SitkDemonsVariant = param(
        SitkDemonsVariant.FAST_SYMMETRIC, "FastSymmetricForcesDemons or DiffeomorphicDemons filter."
    )
    iterations: int = param(50, "Demons iterations per pyramid level.", range=(1, 2000))
    smoothing_sd: float = param(
        1.5,
        "Gaussian smoothing of the displacement field (standard deviation, voxels).",
        range=(0.0, 10.0),
        step=0.25,
    )
    levels: int = param(3, "Pyramid levels (shrink 2 each).", range=(1, 4))
    histogram_match: bool = param(
        True, "Match the moving histogram to the fixed one first (same-contrast only)."
    )


def _shrink(sitk, image, k: int):
    """Gaussian (sigma k/2 voxels of the finest spacing) then shrink by ``k``; ``k = 1`` returns ``image``."""
    if k == 1:
        return image
    return sitk.Shrink(
        sitk.SmoothingRecursiveGaussian(image, 0.5 * k * min(image.GetSpacing())), [k] * image.GetDimension()
    )


class SitkDemonsMethod:
    name = "sitk_demons"

    def register(
        self, fixed: Image, moving: Image, config: SitkDemonsConfig, progress=None
    ) -> RegistrationResult:
        import SimpleITK as sitk

        f, m = sitk_pair(fixed, moving)
        history: list[dict[str, float]] = []
        factors = halving_factors(config.levels)
        filters = {
            SitkDemonsVariant.DIFFEOMORPHIC: sitk.DiffeomorphicDemonsRegistrationFilter,
            SitkDemonsVariant.FAST_SYMMETRIC: sitk.FastSymmetricForcesDemonsRegistrationFilter,
        }
        with Timer(torch.device("cpu")) as timer:
            if config.histogram_match:
                m = sitk.HistogramMatching(
                    m, f, numberOfHistogramLevels=256, numberOfMatchPoints=15, thresholdAtMeanIntensity=True
                )
            field = None
            for level, k in enumerate(factors):
                fk, mk = _shrink(sitk, f, k), _shrink(sitk, m, k)
                flt: Any = filters[SitkDemonsVariant(config.variant)]()
                flt.SetNumberOfIterations(config.iterations)
                flt.SetSmoothDisplacementField(config.smoothing_sd > 0)
                flt.SetStandardDeviations(max(config.smoothing_sd, 1e-3))
                initial = (
                    sitk.Image(fk.GetSize(), sitk.sitkVectorFloat64, fk.GetDimension())
                    if field is None
                    else sitk.Resample(
                        field, fk, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64
                    )
                )
                initial.CopyInformation(fk)
                state = attach_progress(
                    flt,
                    progress,
                    history,
                    f"level {level + 1}/{len(factors)},",
                    lambda i, lv=level: (lv + i / config.iterations) / len(factors),
                    flt.GetMetric,
                )
                field = flt.Execute(fk, mk, initial)
                raise_if_cancelled(state)
            u = sitk_field_to_voxels(field, fixed.geometry)
        return build_result(
            self.name, fixed, moving, u, timer=timer, device="cpu", config=config, loss_history=history
        )


register_method(
    MethodSpec(
        name="sitk_demons",
        title="SimpleITK demons",
        config_cls=SitkDemonsConfig,
        factory=SitkDemonsMethod,
        family=Family.BASELINE,
        dims=(2, 3),
        description="SimpleITK FastSymmetricForces / Diffeomorphic demons, field smoothing sd 1.5, pyramid.",
    )
)
