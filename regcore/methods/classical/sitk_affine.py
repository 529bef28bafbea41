"""SimpleITK affine baseline: Mattes mutual information, regular-step gradient descent, 3-level pyramid.

SimpleITK's fixed point -> moving point transform (LPS mm) becomes regcore's ``(1, ndim, *S)``
displacement in fixed voxels, fixed -> moving, plus the ``(ndim, ndim+1)`` voxel matrix
fixed voxel -> moving voxel (``library_convert``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from regcore.config import param
from regcore.image import Image
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical.library_convert import sitk_pair, transform_to_voxel_displacement
from regcore.methods.classical.result import build_result
from regcore.methods.classical.sitk_progress import attach_progress, raise_if_cancelled
from regcore.methods.registry import Family, MethodSpec, register_method


@dataclass(frozen=True)
class SitkAffineConfig:
    bins: int = param(50, "Histogram bins of Mattes mutual information.", range=(8, 256))
    sampling_percentage: float = param(
        0.2, "Fraction of voxels sampled for the metric.", range=(0.01, 1.0), step=0.01
    )
    iterations: int = param(200, "Gradient-descent iterations per level.", range=(1, 5000))
    learning_rate: float = param(
        1.0, "Step size of regular-step gradient descent (mm, scaled by physical shift).", range=(0.01, 10.0)
    )
    shrink_factors: tuple[int, ...] = param((4, 2, 1), "Pyramid shrink factor per level (coarse to fine).")
    smoothing_sigmas: tuple[float, ...] = param((2.0, 1.0, 0.0), "Gaussian sigma per level (voxels).")
    seed: int = param(
        1,
        "Random seed of the metric sampling (>= 1; SimpleITK reads 0 as 'use the clock').",
        range=(1, 2**31 - 1),
        advanced=True,
    )


def _voxel_matrix(transform, fixed: Image) -> np.ndarray:
    """``(n, n+1)`` voxel matrix fixed voxel -> moving voxel: world^-1 o T o world (same grid for both)."""
    n = fixed.ndim
    pts = np.vstack([np.zeros(n), np.eye(n)])
    mapped = np.array(
        [
            fixed.geometry.world_to_index_points(
                np.array([transform.TransformPoint(tuple(fixed.geometry.index_to_world_points(p[None])[0]))])
            )[0]
            for p in pts
        ]
    )
    return np.concatenate([(mapped[1:] - mapped[0]).T, mapped[0][:, None]], axis=1)


class SitkAffineMethod:
    name = "sitk_affine_mi"

    def register(
        self, fixed: Image, moving: Image, config: SitkAffineConfig, progress=None
    ) -> RegistrationResult:
        import SimpleITK as sitk

        if len(config.shrink_factors) != len(config.smoothing_sigmas):
            raise ValueError(
                f"shrink_factors {config.shrink_factors} and smoothing_sigmas "
                f"{config.smoothing_sigmas} must have the same length"
            )
        f, m = sitk_pair(fixed, moving)
        history: list[dict[str, float]] = []
        with Timer(torch.device("cpu")) as timer:
            init = sitk.CenteredTransformInitializer(
                f, m, sitk.AffineTransform(fixed.ndim), sitk.CenteredTransformInitializerFilter.GEOMETRY
            )
            reg = sitk.ImageRegistrationMethod()
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=config.bins)
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(config.sampling_percentage, config.seed)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(
                config.learning_rate,
                1e-4,
                config.iterations,
                relaxationFactor=0.5,
                gradientMagnitudeTolerance=1e-8,
            )
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel(list(config.shrink_factors))
            reg.SetSmoothingSigmasPerLevel(list(config.smoothing_sigmas))
            reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
            reg.SetInitialTransform(init, inPlace=False)
            total = config.iterations * len(config.shrink_factors)
            state = attach_progress(reg, progress, history, "affine", lambda i: i / total, reg.GetMetricValue)
            transform = reg.Execute(f, m)
            raise_if_cancelled(state)
            u = transform_to_voxel_displacement(transform, f)
        affine = torch.tensor(_voxel_matrix(transform, fixed), dtype=torch.float32)
        return build_result(
            self.name,
            fixed,
            moving,
            u,
            timer=timer,
            device="cpu",
            config=config,
            loss_history=history,
            affine=affine,
        )


register_method(
    MethodSpec(
        name="sitk_affine_mi",
        title="SimpleITK affine (Mattes MI)",
        config_cls=SitkAffineConfig,
        factory=SitkAffineMethod,
        family=Family.BASELINE,
        dims=(2, 3),
        description="SimpleITK ImageRegistrationMethod: affine, Mattes mutual information, 3-level pyramid.",
    )
)
