"""elastix baseline (itk-elastix, optional extra "elastix") behind the regcore method interface.

Runs elastix's default parameter maps (``affine`` and/or ``bspline``, Mattes MI, multi-resolution);
transformix turns the result into a displacement field on the fixed grid (LPS mm, fixed point ->
moving point), which becomes regcore's ``(1, ndim, *S)`` voxel displacement, fixed -> moving.
Without itk-elastix the factory raises :class:`~regcore.methods.registry.MissingExtraError`
naming ``pip install 'reglab[elastix]'``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from regcore.config import param
from regcore.extras import require_extra
from regcore.image import Image
from regcore.methods.base import RegistrationResult, Timer, report
from regcore.methods.classical.library_convert import check_same_grid, itk_array_field_to_voxels, to_itk
from regcore.methods.classical.result import build_result
from regcore.methods.registry import Family, MethodSpec, register_method


class ElastixStages(enum.StrEnum):
    BSPLINE = "bspline"
    AFFINE_BSPLINE = "affine+bspline"
    AFFINE = "affine"


@dataclass(frozen=True)
class ElastixConfig:
    stages: ElastixStages = param(ElastixStages.BSPLINE, "Default parameter maps to run, in order.")
    resolutions: int = param(3, "Pyramid levels (NumberOfResolutions).", range=(1, 6))
    grid_spacing_mm: float = param(16.0, "Final B-spline control-point spacing (mm).", range=(2.0, 200.0))
    iterations: int = param(250, "MaximumNumberOfIterations per level.", range=(1, 5000))


def elastix_installed() -> bool:
    """True when itk-elastix is importable (its module is ``itk.ElastixPython``, not ``itk_elastix``)."""
    import importlib.util

    try:
        return (
            importlib.util.find_spec("itk") is not None
            and importlib.util.find_spec("itk.ElastixPython") is not None
        )
    except (ImportError, ValueError):
        return False


class ElastixMethod:
    name = "elastix"

    def __init__(self) -> None:
        if not elastix_installed():
            require_extra("elastix", self.name)  # raises MissingExtraError with the install command

    def register(
        self, fixed: Image, moving: Image, config: ElastixConfig, progress=None
    ) -> RegistrationResult:
        import itk

        check_same_grid(fixed, moving)
        report(progress, 0.0, "elastix running")
        with Timer(torch.device("cpu")) as timer:
            f, m = to_itk(fixed), to_itk(moving)
            params = itk.ParameterObject.New()
            kinds = {"affine": ["affine"], "bspline": ["bspline"], "affine+bspline": ["affine", "bspline"]}[
                str(config.stages)
            ]
            for kind in kinds:
                pm = params.GetDefaultParameterMap(kind, config.resolutions, config.grid_spacing_mm)
                pm["MaximumNumberOfIterations"] = [str(config.iterations)]
                params.AddParameterMap(pm)
            _, result_params = itk.elastix_registration_method(
                f, m, parameter_object=params, log_to_console=False
            )
            field = _deformation_field(itk, m, result_params)
            u = itk_array_field_to_voxels(itk.array_from_image(field), fixed.geometry)  # (*S reversed, n) mm
        report(progress, 1.0, "elastix done")
        return build_result(
            self.name, fixed, moving, u, timer=timer, device="cpu", config=config, loss_history=[]
        )


def _deformation_field(itk, moving_itk, result_params):
    """transformix's deformation field, computed in a private temporary folder.

    ``itk.transformix_deformation_field`` writes ``deformationField.nii`` into the current
    working directory; the filter with an explicit output directory keeps the user's folder clean.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reglab-transformix-") as tmp:
        tfx = itk.TransformixFilter.New(moving_itk)
        tfx.SetTransformParameterObject(result_params)
        tfx.SetComputeDeformationField(True)
        tfx.SetOutputDirectory(tmp)
        tfx.SetLogToConsole(False)
        tfx.UpdateLargestPossibleRegion()
        field = tfx.GetOutputDeformationField()
        return itk.image_duplicator(field)


register_method(
    MethodSpec(
        name="elastix",
        title="elastix (B-spline)",
        config_cls=ElastixConfig,
        factory=ElastixMethod,
        family=Family.BASELINE,
        dims=(2, 3),
        requires="elastix",
        description="elastix default B-spline (optionally affine first) with Mattes MI; needs the 'elastix' extra.",
    )
)
