"""SimpleITK B-spline baseline: free-form deformation, Mattes MI / mean squares / correlation,
line-search gradient descent, control mesh refined over a shrink pyramid.

The B-spline transform (fixed point -> moving point, LPS mm) becomes regcore's ``(1, ndim, *S)``
displacement in fixed voxels, fixed -> moving (``library_convert``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from regcore.config import param
from regcore.image import Image
from regcore.methods.base import RegistrationResult, Timer
from regcore.methods.classical.library_convert import sitk_pair, transform_to_voxel_displacement
from regcore.methods.classical.pyramid import halving_factors
from regcore.methods.classical.result import build_result
from regcore.methods.classical.sitk_progress import attach_progress, raise_if_cancelled
from regcore.methods.registry import Family, MethodSpec, register_method


class SitkMetric(enum.StrEnum):
    MATTES_MI = "mattes_mi"
    MEAN_SQUARES = "mean_squares"
    CORRELATION = "correlation"


@dataclass(frozen=True)
class SitkBSplineConfig:
    metric: SitkMetric = param(
        SitkMetric.MATTES_MI, "Similarity: Mattes MI (multi-modal), mean squares or correlation."
    )
    grid_spacing_mm: float = param(
        20.0, "Control-point spacing of the final (finest) mesh, mm.", range=(2.0, 200.0)
    )
    levels: int = param(
        3, "Resolution levels; the mesh doubles and the image shrink halves each level.", range=(1, 4)
    )
    iterations: int = param(200, "Gradient-descent (line search) iterations per level.", range=(1, 2000))
    sampling_percentage: float = param(
        0.5, "Fraction of voxels sampled for the metric.", range=(0.01, 1.0), step=0.01
    )
    seed: int = param(
        1,
        "Random seed of the metric sampling (>= 1; SimpleITK reads 0 as 'use the clock').",
        range=(1, 2**31 - 1),
        advanced=True,
    )


def _set_metric(reg, metric: SitkMetric) -> None:
    {
        SitkMetric.MATTES_MI: lambda: reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50),
        SitkMetric.MEAN_SQUARES: reg.SetMetricAsMeanSquares,
        SitkMetric.CORRELATION: reg.SetMetricAsCorrelation,
    }[SitkMetric(metric)]()


class SitkBSplineMethod:
    name = "sitk_bspline"

    def register(
        self, fixed: Image, moving: Image, config: SitkBSplineConfig, progress=None
    ) -> RegistrationResult:
        import SimpleITK as sitk

        f, m = sitk_pair(fixed, moving)
        history: list[dict[str, float]] = []
        factors = halving_factors(config.levels)
        with Timer(torch.device("cpu")) as timer:
            extent = [s * (n - 1) for s, n in zip(f.GetSpacing(), f.GetSize())]
            # The coarsest mesh is refined by 2 per level to reach grid_spacing_mm at the finest one.
            coarse = [max(1, int(round(e / (config.grid_spacing_mm * factors[0])))) for e in extent]
            init = sitk.BSplineTransformInitializer(f, coarse, order=3)
            reg = sitk.ImageRegistrationMethod()
            _set_metric(reg, config.metric)
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(config.sampling_percentage, config.seed)
            reg.SetInterpolator(sitk.sitkLinear)
            # Line-search gradient descent with physical-shift scales (LBFGSB keeps stale scales when the
            # mesh is refined between levels; LBFGS2 stopped at iteration 0 on small 2D pairs).
            reg.SetOptimizerAsGradientDescentLineSearch(
                learningRate=1.0,
                numberOfIterations=config.iterations,
                convergenceMinimumValue=1e-6,
                convergenceWindowSize=10,
            )
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetInitialTransformAsBSpline(init, inPlace=True, scaleFactors=[1] + [2] * (config.levels - 1))
            reg.SetShrinkFactorsPerLevel(factors)
            reg.SetSmoothingSigmasPerLevel([0.5 * k if k > 1 else 0.0 for k in factors])
            total = config.iterations * config.levels
            state = attach_progress(
                reg, progress, history, "bspline", lambda i: i / total, reg.GetMetricValue
            )
            transform = reg.Execute(f, m)
            raise_if_cancelled(state)
            u = transform_to_voxel_displacement(transform, f)
        return build_result(
            self.name, fixed, moving, u, timer=timer, device="cpu", config=config, loss_history=history
        )


register_method(
    MethodSpec(
        name="sitk_bspline",
        title="SimpleITK B-spline",
        config_cls=SitkBSplineConfig,
        factory=SitkBSplineMethod,
        family=Family.BASELINE,
        dims=(2, 3),
        description="SimpleITK B-spline free-form deformation, gradient descent, mesh refined over a pyramid.",
    )
)
