"""SimpleITK registration baselines behind the regcore method interface.

* ``sitk_affine_mi``: affine, Mattes mutual information, multi-resolution (ImageRegistrationMethod).
* ``sitk_bspline``: B-spline FFD, Mattes MI / mean squares / correlation, line-search gradient descent, mesh refined per level.
* ``sitk_demons``: FastSymmetricForcesDemons or DiffeomorphicDemons, displacement smoothing sd 1.5,
  on a shrink pyramid.

Every result is converted to regcore's convention: a ``(1, ndim, *S)`` displacement in voxels of
the fixed grid mapping fixed -> moving (``warped = moving o (id + u)``), from SimpleITK's
physical (LPS mm) fixed->moving transform: ``u = (direction diag(spacing))^-1 (T(p) - p)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch

from regcore.config import param
from regcore.image import Geometry, Image
from regcore.methods.base import RegistrationCancelled, RegistrationResult, Timer, report
from regcore.methods.registry import Family, MethodSpec, register_method
from regcore.spatial.warp import warp


# -- conversions ------------------------------------------------------------------------------
def to_sitk(image: Image, channel: int = 0):
    """Channel of an Image -> float32 ``sitk.Image`` with the same geometry (array transposed to ITK order)."""
    import SimpleITK as sitk

    arr = image.data[channel].detach().cpu().float().numpy()
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr.T))
    out.SetSpacing(image.geometry.spacing)
    out.SetOrigin(image.geometry.origin)
    out.SetDirection(tuple(image.geometry.direction_matrix.reshape(-1)))
    return out


def world_field_to_voxels(field_mm: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """``(*S, n)`` LPS-mm displacement (tensor axis order) -> ``(1, n, *S)`` float32 voxel displacement."""
    n = geometry.ndim
    a_inv = np.linalg.inv(geometry.index_to_world[:n, :n])
    u = np.einsum("ij,...j->i...", a_inv, field_mm)
    return torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32))[None]


def sitk_field_to_voxels(field, geometry: Geometry) -> torch.Tensor:
    """A SimpleITK vector image (mm, on ``geometry``) -> ``(1, n, *S)`` voxel displacement."""
    import SimpleITK as sitk

    n = geometry.ndim
    arr = sitk.GetArrayFromImage(field).astype(np.float64)  # (*S reversed, n)
    return world_field_to_voxels(np.transpose(arr, (*range(n - 1, -1, -1), n)), geometry)


def transform_to_voxel_displacement(transform, reference) -> torch.Tensor:
    """Any SimpleITK transform (fixed point -> moving point, mm) -> voxel displacement on ``reference``'s grid."""
    import SimpleITK as sitk

    n = reference.GetDimension()
    geometry = Geometry(reference.GetSize(), reference.GetSpacing(), reference.GetOrigin(),
                        tuple(map(tuple, np.asarray(reference.GetDirection()).reshape(n, n))))
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, reference.GetSize(),
                                              reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection())
    return sitk_field_to_voxels(field, geometry)


def _result(name: str, fixed: Image, moving: Image, u: torch.Tensor, timer: Timer, config, history,
            affine: torch.Tensor | None = None) -> RegistrationResult:
    u = u.to(fixed.device)
    warped = warp(moving.batch().to(fixed.device), u)
    return RegistrationResult(method=name, fixed=fixed, moving=moving, warped=moving.with_data(warped[0]),
                              displacement=u, affine=affine, loss_history=history, runtime_s=timer.runtime_s,
                              peak_memory_mb=timer.peak_memory_mb, device="cpu", config=config)


def _check_pair(fixed: Image, moving: Image) -> None:
    if not isinstance(fixed, Image) or not isinstance(moving, Image):
        raise TypeError(f"fixed and moving must be regcore Images, got {type(fixed).__name__}, {type(moving).__name__}")
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed and moving must lie on the same grid (resample moving with regcore.preprocess.resample_to): {fixed.shape} vs {moving.shape}")


def _attach_progress(obj, progress, history: list, label: str, fraction, metric) -> dict:
    """Forward SimpleITK iteration events of ``obj`` to a regcore progress callback.

    ``fraction(i)`` maps the iteration count to [0, 1]; ``metric()`` reads the current value.
    A cancel request stops ``obj`` at the next event; call :func:`_raise_if_cancelled` after Execute.
    """
    import SimpleITK as sitk

    state = {"i": 0, "cancelled": False}

    def on_iter():
        state["i"] += 1
        value = float(metric())
        history.append({"similarity": value})
        try:
            report(progress, min(fraction(state["i"]), 0.99), f"{label} iter {state['i']}", similarity=value)
        except RegistrationCancelled:
            state["cancelled"] = True
            obj.StopRegistration()

    obj.AddCommand(sitk.sitkIterationEvent, on_iter)
    return state


def _raise_if_cancelled(state: dict) -> None:
    if state["cancelled"]:
        raise RegistrationCancelled("cancelled by the progress callback")


# -- affine, Mattes MI ------------------------------------------------------------------------
@dataclass(frozen=True)
class SitkAffineConfig:
    bins: int = param(50, "Histogram bins of Mattes mutual information.", range=(8, 256))
    sampling_percentage: float = param(0.2, "Fraction of voxels sampled for the metric.", range=(0.01, 1.0), step=0.01)
    iterations: int = param(200, "Gradient-descent iterations per level.", range=(1, 5000))
    learning_rate: float = param(1.0, "Step size of regular-step gradient descent (mm, scaled by physical shift).",
                                 range=(0.01, 10.0))
    shrink_factors: tuple[int, ...] = param((4, 2, 1), "Pyramid shrink factor per level (coarse to fine).")
    smoothing_sigmas: tuple[float, ...] = param((2.0, 1.0, 0.0), "Gaussian sigma per level (voxels).")
    seed: int = param(1, "Random seed of the metric sampling (>= 1; SimpleITK reads 0 as 'use the clock').",
                      range=(1, 2**31 - 1), advanced=True)


class SitkAffineMethod:
    name = "sitk_affine_mi"

    def register(self, fixed: Image, moving: Image, config: SitkAffineConfig, progress=None) -> RegistrationResult:
        import SimpleITK as sitk

        _check_pair(fixed, moving)
        if len(config.shrink_factors) != len(config.smoothing_sigmas):
            raise ValueError(f"shrink_factors {config.shrink_factors} and smoothing_sigmas "
                             f"{config.smoothing_sigmas} must have the same length")
        f, m = to_sitk(fixed), to_sitk(moving)
        history: list[dict[str, float]] = []
        with Timer(torch.device("cpu")) as timer:
            init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(fixed.ndim),
                                                     sitk.CenteredTransformInitializerFilter.GEOMETRY)
            reg = sitk.ImageRegistrationMethod()
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=config.bins)
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(config.sampling_percentage, config.seed)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(config.learning_rate, 1e-4, config.iterations,
                                                         relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel(list(config.shrink_factors))
            reg.SetSmoothingSigmasPerLevel(list(config.smoothing_sigmas))
            reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
            reg.SetInitialTransform(init, inPlace=False)
            total = config.iterations * len(config.shrink_factors)
            state = _attach_progress(reg, progress, history, "affine", lambda i: i / total, reg.GetMetricValue)
            transform = reg.Execute(f, m)
            _raise_if_cancelled(state)
            u = transform_to_voxel_displacement(transform, f)
        # Voxel affine fixed voxel -> moving voxel: world^-1 o T o world (same grid for both).
        n = fixed.ndim
        pts = np.vstack([np.zeros(n), np.eye(n)])
        mapped = np.array([fixed.geometry.world_to_index_points(
            np.array([transform.TransformPoint(tuple(fixed.geometry.index_to_world_points(p[None])[0]))]))[0]
            for p in pts])
        affine = np.concatenate([(mapped[1:] - mapped[0]).T, mapped[0][:, None]], axis=1)
        return _result(self.name, fixed, moving, u, timer, config, history,
                       affine=torch.tensor(affine, dtype=torch.float32))


# -- B-spline FFD -----------------------------------------------------------------------------
class SitkMetric(enum.StrEnum):
    MATTES_MI = "mattes_mi"
    MEAN_SQUARES = "mean_squares"
    CORRELATION = "correlation"


@dataclass(frozen=True)
class SitkBSplineConfig:
    metric: SitkMetric = param(SitkMetric.MATTES_MI, "Similarity: Mattes MI (multi-modal), mean squares or correlation.")
    grid_spacing_mm: float = param(20.0, "Control-point spacing of the final (finest) mesh, mm.", range=(2.0, 200.0))
    levels: int = param(3, "Resolution levels; the mesh doubles and the image shrink halves each level.", range=(1, 4))
    iterations: int = param(200, "Gradient-descent (line search) iterations per level.", range=(1, 2000))
    sampling_percentage: float = param(0.5, "Fraction of voxels sampled for the metric.", range=(0.01, 1.0), step=0.01)
    seed: int = param(1, "Random seed of the metric sampling (>= 1; SimpleITK reads 0 as 'use the clock').",
                      range=(1, 2**31 - 1), advanced=True)


class SitkBSplineMethod:
    name = "sitk_bspline"

    def register(self, fixed: Image, moving: Image, config: SitkBSplineConfig, progress=None) -> RegistrationResult:
        import SimpleITK as sitk

        _check_pair(fixed, moving)
        f, m = to_sitk(fixed), to_sitk(moving)
        history: list[dict[str, float]] = []
        factors = [2**k for k in range(config.levels - 1, -1, -1)]
        with Timer(torch.device("cpu")) as timer:
            extent = [s * (n - 1) for s, n in zip(f.GetSpacing(), f.GetSize())]
            # The coarsest mesh is refined by 2 per level to reach grid_spacing_mm at the finest one.
            coarse = [max(1, int(round(e / (config.grid_spacing_mm * factors[0])))) for e in extent]
            init = sitk.BSplineTransformInitializer(f, coarse, order=3)
            reg = sitk.ImageRegistrationMethod()
            if config.metric == SitkMetric.MATTES_MI:
                reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
            elif config.metric == SitkMetric.MEAN_SQUARES:
                reg.SetMetricAsMeanSquares()
            else:
                reg.SetMetricAsCorrelation()
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(config.sampling_percentage, config.seed)
            reg.SetInterpolator(sitk.sitkLinear)
            # Line-search gradient descent with physical-shift scales (LBFGSB keeps stale scales when the
            # mesh is refined between levels; LBFGS2 stopped at iteration 0 on small 2D pairs).
            reg.SetOptimizerAsGradientDescentLineSearch(learningRate=1.0, numberOfIterations=config.iterations,
                                                        convergenceMinimumValue=1e-6, convergenceWindowSize=10)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetInitialTransformAsBSpline(init, inPlace=True, scaleFactors=[1] + [2] * (config.levels - 1))
            reg.SetShrinkFactorsPerLevel(factors)
            reg.SetSmoothingSigmasPerLevel([0.5 * k if k > 1 else 0.0 for k in factors])
            total = config.iterations * config.levels
            state = _attach_progress(reg, progress, history, "bspline", lambda i: i / total, reg.GetMetricValue)
            transform = reg.Execute(f, m)
            _raise_if_cancelled(state)
            u = transform_to_voxel_displacement(transform, f)
        return _result(self.name, fixed, moving, u, timer, config, history)


# -- demons -----------------------------------------------------------------------------------
class SitkDemonsVariant(enum.StrEnum):
    FAST_SYMMETRIC = "fast_symmetric"
    DIFFEOMORPHIC = "diffeomorphic"


@dataclass(frozen=True)
class SitkDemonsConfig:
    variant: SitkDemonsVariant = param(SitkDemonsVariant.FAST_SYMMETRIC,
                                       "FastSymmetricForcesDemons or DiffeomorphicDemons filter.")
    iterations: int = param(50, "Demons iterations per pyramid level.", range=(1, 2000))
    smoothing_sd: float = param(1.5, "Gaussian smoothing of the displacement field (standard deviation, voxels).",
                                range=(0.0, 10.0), step=0.25)
    levels: int = param(3, "Pyramid levels (shrink 2 each).", range=(1, 4))
    histogram_match: bool = param(True, "Match the moving histogram to the fixed one first (same-contrast only).")


class SitkDemonsMethod:
    name = "sitk_demons"

    def register(self, fixed: Image, moving: Image, config: SitkDemonsConfig, progress=None) -> RegistrationResult:
        import SimpleITK as sitk

        _check_pair(fixed, moving)
        f, m = to_sitk(fixed), to_sitk(moving)
        history: list[dict[str, float]] = []
        factors = [2**k for k in range(config.levels - 1, -1, -1)]
        with Timer(torch.device("cpu")) as timer:
            if config.histogram_match:
                m = sitk.HistogramMatching(m, f, numberOfHistogramLevels=256, numberOfMatchPoints=15,
                                           thresholdAtMeanIntensity=True)
            field = None
            for level, k in enumerate(factors):
                fk = sitk.Shrink(sitk.SmoothingRecursiveGaussian(f, 0.5 * k * min(f.GetSpacing())), [k] * f.GetDimension()) if k > 1 else f
                mk = sitk.Shrink(sitk.SmoothingRecursiveGaussian(m, 0.5 * k * min(m.GetSpacing())), [k] * m.GetDimension()) if k > 1 else m
                if config.variant == SitkDemonsVariant.DIFFEOMORPHIC:
                    flt = sitk.DiffeomorphicDemonsRegistrationFilter()
                else:
                    flt = sitk.FastSymmetricForcesDemonsRegistrationFilter()
                flt.SetNumberOfIterations(config.iterations)
                flt.SetSmoothDisplacementField(config.smoothing_sd > 0)
                flt.SetStandardDeviations(max(config.smoothing_sd, 1e-3))
                initial = (sitk.Image(fk.GetSize(), sitk.sitkVectorFloat64, fk.GetDimension()) if field is None
                           else sitk.Resample(field, fk, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64))
                initial.CopyInformation(fk)
                state = _attach_progress(flt, progress, history, f"level {level + 1}/{len(factors)},",
                                         lambda i, lv=level: (lv + i / config.iterations) / len(factors), flt.GetMetric)
                field = flt.Execute(fk, mk, initial)
                _raise_if_cancelled(state)
            u = sitk_field_to_voxels(field, fixed.geometry)
        return _result(self.name, fixed, moving, u, timer, config, history)


register_method(MethodSpec(
    name="sitk_affine_mi", title="SimpleITK affine (Mattes MI)", config_cls=SitkAffineConfig,
    factory=SitkAffineMethod, family=Family.BASELINE, dims=(2, 3),
    description="SimpleITK ImageRegistrationMethod: affine, Mattes mutual information, 3-level pyramid.",
))
register_method(MethodSpec(
    name="sitk_bspline", title="SimpleITK B-spline", config_cls=SitkBSplineConfig,
    factory=SitkBSplineMethod, family=Family.BASELINE, dims=(2, 3),
    description="SimpleITK B-spline free-form deformation, gradient descent, mesh refined over a pyramid.",
))
register_method(MethodSpec(
    name="sitk_demons", title="SimpleITK demons", config_cls=SitkDemonsConfig,
    factory=SitkDemonsMethod, family=Family.BASELINE, dims=(2, 3),
    description="SimpleITK FastSymmetricForces / Diffeomorphic demons, field smoothing sd 1.5, pyramid.",
))
