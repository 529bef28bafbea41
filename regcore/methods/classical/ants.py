"""ANTs SyN baseline (antspyx, optional extra "ants") behind the regcore method interface.

antspyx pins numpy<2.4, so it lives in its own environment: ``make bench-env`` builds
``.venv-bench`` with the ``[elastix,ants]`` extras. Without it the factory raises
:class:`~regcore.methods.registry.MissingExtraError` with that command.

ANTs composes its forward transforms (affine + warp) into one displacement field on the fixed
grid (``apply_transforms(..., compose=...)``: LPS mm, fixed point -> moving point), which is
converted to regcore's ``(1, ndim, *S)`` voxel displacement, fixed -> moving.
"""

from __future__ import annotations

import enum
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from regcore.config import param
from regcore.extras import require_extra
from regcore.image import Image
from regcore.methods.base import RegistrationResult, Timer, report
from regcore.methods.classical.library_convert import check_same_grid, sitk_field_to_voxels, to_ants
from regcore.methods.classical.result import build_result
from regcore.methods.registry import Family, MethodSpec, register_method


class AntsTransform(enum.StrEnum):
    SYN = "SyN"
    SYN_ONLY = "SyNOnly"
    SYN_RA = "SyNRA"
    ELASTIC = "ElasticSyN"
    SYN_CC = "SyNCC"


@dataclass(frozen=True)
class AntsConfig:
    transform: AntsTransform = param(
        AntsTransform.SYN_ONLY,
        "ANTs type_of_transform: SyNOnly (deformable only; inputs "
        "already share a grid), SyN / SyNRA (affine first), ElasticSyN, SyNCC.",
    )
    iterations: tuple[int, ...] = param(
        (40, 20, 0), "SyN iterations per level, coarse to fine (reg_iterations)."
    )
    metric: str = param(
        "mattes",
        "SyN metric (syn_metric): mattes (multi-modal), CC or meansquares.",
        choices=("mattes", "CC", "meansquares", "demons"),
    )
    seed: int = param(1, "Random seed (ANTs sampling).", range=(0, 2**31 - 1), advanced=True)


class AntsSynMethod:
    name = "ants_syn"

    def __init__(self) -> None:
        require_extra("ants", self.name)

    def register(self, fixed: Image, moving: Image, config: AntsConfig, progress=None) -> RegistrationResult:
        import ants
        import SimpleITK as sitk

        check_same_grid(fixed, moving)
        report(progress, 0.0, "ANTs registration running")
        with Timer(torch.device("cpu")) as timer, tempfile.TemporaryDirectory(prefix="reglab_ants_") as tmp:
            f, m = to_ants(fixed), to_ants(moving)
            reg = ants.registration(
                fixed=f,
                moving=m,
                type_of_transform=str(config.transform),
                reg_iterations=tuple(config.iterations),
                syn_metric=config.metric,
                random_seed=config.seed,
                outprefix=str(Path(tmp) / "reg_"),
            )
            composed = ants.apply_transforms(
                fixed=f, moving=m, transformlist=reg["fwdtransforms"], compose=str(Path(tmp) / "fwd_")
            )
            u = sitk_field_to_voxels(sitk.ReadImage(str(composed)), fixed.geometry)
        report(progress, 1.0, "ANTs registration done")
        return build_result(
            self.name, fixed, moving, u, timer=timer, device="cpu", config=config, loss_history=[]
        )


register_method(
    MethodSpec(
        name="ants_syn",
        title="ANTs SyN",
        config_cls=AntsConfig,
        factory=AntsSynMethod,
        family=Family.BASELINE,
        dims=(2, 3),
        requires="ants",
        description="ANTsPy SyN (symmetric normalisation), the classic diffeomorphic baseline; needs the 'ants' "
        "extra (make bench-env).",
    )
)
