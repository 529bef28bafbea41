"""The learned-family contract: one file per family declares everything about itself.

A *family* (VoxelMorph, TransMorph, an affine CNN, a GAN, an INR, ...) is a subclass of
:class:`LearnedFamily` registered with :func:`register_family`. The training engine (loop,
worker, jobs, checkpoints, previews), the Train and Register pages, the CLI and the benchmark
work through this interface only and never name a family.

What a family declares:

* ``name`` (registry id, also the registration method's name), ``title``, ``summary`` (plain
  words, three or four sentences), ``paper``, ``supervision`` (default training mode).
* ``Config``: a frozen dataclass of the family's hyperparameters, fields declared with
  :func:`regcore.config.param` (typed, with ranges and help, so forms build from it).
* ``Settings``: the inference settings of its registration method (a subclass of
  :class:`LearnedSettings`: checkpoint, device, plus family options such as a lambda).
* :meth:`build` -> ``nn.ModuleDict`` of one or several networks.
* :meth:`train_step`: one optimisation step. The default is one forward pass through
  :meth:`predict` and :func:`regcore.train.objectives.registration_losses` (similarity +
  regulariser + optional labels/field supervision) with one Adam over all weights; a family
  overrides it for two networks (GAN, cycle), staged schedules, rollouts or sampling.
* :meth:`predict` -> :class:`Prediction`: one forward pass, iterative sampling or a per-pair
  optimisation (``needs_training = False``: then there is no checkpoint).
* :meth:`explain` (optional): the mechanism views that cost extra work beyond the field (a morphing
  trajectory, sampling steps). The engine calls it after the timed registration, so a family's
  runtime is the time to its field; the views' own time is reported as ``explain_s``.
* :meth:`divisor` (spatial sizes the networks accept) and :meth:`recipe` (default training
  recipe values for the common :class:`~regcore.train.config.TrainConfig` fields).

Conventions: images ``(B, 1, *S)`` in [0, 1] on the model grid; every displacement is
``(B, ndim, *S)`` in voxels of the fixed grid and maps fixed -> moving
(``warped = moving o (id + u)``).

Plug-ins: a family defined outside ``regcore`` registers itself when its module is imported.
The engine imports the modules named in the environment variable ``REGCORE_PLUGINS``
(comma-separated) and in the ``regcore.families`` entry-point group, and a training run
records its family's module so its worker process imports it too.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from regcore.config import from_overrides, param, to_dict
from regcore.methods.registry import Family, MethodSpec, Supervision, register_method

if TYPE_CHECKING:
    from regcore.train.config import TrainConfig

PLUGIN_ENV = "REGCORE_PLUGINS"
ENTRY_POINT_GROUP = "regcore.families"


@dataclass
class Prediction:
    """What a family's :meth:`LearnedFamily.predict` returns (all on the model grid).

    Attributes:
        displacement: ``(B, n, *S)`` voxels, fixed -> moving. Always present.
        velocity: stationary velocity ``(B, n, *S)`` voxels whose exponential is the map.
        affine: ``(B, n, n+1)`` voxel affine, fixed voxel -> moving voxel.
        variance: per-voxel variance of the displacement ``(B, n, *S)`` (voxels^2).
        samples: sampled displacements ``(K, B, n, *S)``.
        template: a learned template image ``(1, 1, *S)``.
        trajectory: displacements along a path ``[(B, n, *S), ...]``, t from 0 to 1.
        extras: anything else worth showing (named tensors or floats).
    """

    displacement: torch.Tensor
    velocity: torch.Tensor | None = None
    affine: torch.Tensor | None = None
    variance: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    template: torch.Tensor | None = None
    trajectory: list[torch.Tensor] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, torch.Tensor]:
        """The tensors that are set, by name (trajectory and extras excluded)."""
        names = ("displacement", "velocity", "affine", "variance", "samples", "template")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


class NonFiniteLoss(ValueError):
    """A training loss (or the weights) became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass(frozen=True)
class LearnedSettings:
    """Inference settings every learned method has; a family subclasses it to add its own."""

    checkpoint: str = param(
        "",
        "Weights file (.pt) from `regcore train`; empty = the shipped weights "
        "assets/models/<family><dims>d.pt.",
    )
    device: str = param("auto", "auto = CUDA when available, else CPU.", choices=("auto", "cpu", "cuda"))
    refine_iterations: int = param(
        0,
        "Instance optimisation: greedy LNCC steps (FireANTs-style, full resolution) that refine the "
        "network's field on this pair; 25 is a good start; 0 = network only.",
        range=(0, 1000),
    )
    refine_smoothing: float = param(
        0.5,
        "Gaussian sigma (voxels) smoothing the field after each instance-optimisation step: larger is "
        "smoother, with less folding and a little less overlap.",
        range=(0.0, 5.0),
        step=0.25,
        advanced=True,
    )


@dataclass(frozen=True)
class NoConfig:
    """A family without hyperparameters of its own."""


@dataclass
class StepContext:
    """What the engine hands a family's :meth:`LearnedFamily.train_step`.

    Attributes:
        config: the whole training recipe (common fields).
        family_config: the family's own hyperparameters (an instance of ``Family.Config``).
        similarity: the image similarity loss module (lower is better).
        step: 0-based global optimisation step.
        autocast: context manager factory for mixed precision (a no-op on CPU).
        scaler: ``torch.amp.GradScaler`` on CUDA, else None.
    """

    config: TrainConfig
    family_config: Any
    similarity: nn.Module
    step: int = 0
    autocast: Any = None
    scaler: Any = None


class LearnedFamily:
    """Base class of every learned family; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    supervision: ClassVar[Supervision] = Supervision.UNSUPERVISED
    Config: ClassVar[type] = NoConfig
    Settings: ClassVar[type] = LearnedSettings
    needs_training: ClassVar[bool] = True
    dims: ClassVar[tuple[int, ...]] = (2, 3)
    crop_training: ClassVar[bool] = False
    """True when the networks are fully convolutional (no size-bound layer), so training on random crops
    (``TrainConfig.crop_shape``) teaches the prediction the whole grid gets."""

    # -- building -------------------------------------------------------------------------------
    def build(self, dims: int, config: Any) -> nn.ModuleDict:
        """The family's networks for ``dims`` (2 or 3) and its ``Config`` instance."""
        raise NotImplementedError

    def divisor(self, dims: int, config: Any) -> int:
        """Every spatial size given to :meth:`predict` must be a multiple of this."""
        return 1

    def recipe(self, dims: int) -> dict[str, Any]:
        """Default values of common TrainConfig fields for this family: 2 mm, a canvas that holds a 2 mm brain
        (slices of 160x192x224 at 1 mm) and is a multiple of 16. Override for other divisors or defaults."""
        return {"spacing_mm": 2.0, "train_shape": (96, 112) if dims == 2 else (64, 80, 64)}

    # -- training ---------------------------------------------------------------------------------
    def optimizers(self, nets: nn.ModuleDict, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers; default: one Adam over every weight."""
        return {"main": torch.optim.Adam(nets.parameters(), lr=lr)}

    def losses(
        self, nets: nn.ModuleDict, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        """Named loss terms with their weighted ``total`` for one batch (used for training and validation)."""
        from regcore.train.objectives import registration_losses

        pred = self.predict(nets, batch["moving"], batch["fixed"], ctx.family_config)
        return registration_losses(ctx.config, pred, batch, ctx.similarity)

    def train_step(
        self,
        nets: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        batch: dict[str, torch.Tensor],
        ctx: StepContext,
    ) -> dict[str, float]:
        """One step: loss terms -> backward -> every optimiser steps. Returns the terms as floats."""
        from contextlib import nullcontext

        with ctx.autocast() if ctx.autocast else nullcontext():
            terms = self.losses(nets, batch, ctx)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        total = terms["total"]
        if not torch.isfinite(total):
            raise NonFiniteLoss(f"training loss became {float(total.detach())} at step {ctx.step + 1}")
        if ctx.scaler is not None:
            ctx.scaler.scale(total).backward()
            for opt in optimizers.values():
                ctx.scaler.step(opt)
            ctx.scaler.update()
        else:
            total.backward()
            for opt in optimizers.values():
                opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    # -- inference -------------------------------------------------------------------------------
    def predict(
        self,
        nets: nn.ModuleDict,
        moving: torch.Tensor,
        fixed: torch.Tensor,
        config: Any,
        settings: Any = None,
    ) -> Prediction:
        """``moving``, ``fixed`` ``(B, 1, *S)`` in [0, 1] on the model grid -> :class:`Prediction`.

        ``settings`` is the registration method's Settings instance (None during training).
        """
        raise NotImplementedError

    def explain(
        self,
        nets: nn.ModuleDict,
        moving: torch.Tensor,
        fixed: torch.Tensor,
        config: Any,
        settings: Any,
        prediction: Prediction,
    ) -> Prediction:
        """Add the mechanism views that are not by-products of :meth:`predict` (``trajectory``,
        ``extras["maps"]``) to ``prediction`` and return it; called untimed, without gradients, after
        registration. Default: nothing to add."""
        return prediction

    # -- helpers the engine uses ------------------------------------------------------------------
    def make_config(self, values: dict[str, Any] | None = None) -> Any:
        """The family's Config from JSON-like values; ValueError names the field."""
        if values is not None and not isinstance(values, dict):
            raise TypeError(f"{self.name} family_config must be a mapping, got {type(values).__name__}")
        return from_overrides(self.Config, dict(values or {}), parse_strings=False)  # lists -> tuple fields

    def config_dict(self, config: Any) -> dict[str, Any]:
        """JSON-friendly values of a Config instance (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in to_dict(config).items()}

    @classmethod
    def module(cls) -> str:
        """Python module that defines (and registers) this family."""
        return cls.__module__


_FAMILIES: dict[str, LearnedFamily] = {}


def register_family(cls: type[LearnedFamily]) -> type[LearnedFamily]:
    """Class decorator: register a family and its registration method (same name)."""
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"{cls.__name__}.name must be a non-empty identifier, got {cls.name!r}")
    if cls.name in _FAMILIES and type(_FAMILIES[cls.name]) is not cls:
        if _FAMILIES[cls.name].module() != cls.module():
            raise ValueError(
                f"learned family {cls.name!r} is already registered by {_FAMILIES[cls.name].module()}"
            )
    family = cls()
    _FAMILIES[cls.name] = family
    from regcore.methods.learned.inference import LearnedMethod
    from regcore.methods.registry import _REGISTRY

    _REGISTRY.pop(cls.name, None)  # re-registration of the same family (module reloaded)

    def factory() -> LearnedMethod:
        return LearnedMethod(family)

    register_method(
        MethodSpec(
            name=cls.name,
            title=cls.title or cls.name,
            config_cls=cls.Settings,
            factory=factory,
            family=Family.LEARNED,
            supervision=cls.supervision,
            dims=cls.dims,
            needs_training=cls.needs_training,
            description=cls.summary,
            paper=cls.paper,
        )
    )
    return cls


def load_plugins() -> None:
    """Import the plug-in modules named in ``REGCORE_PLUGINS`` and the ``regcore.families`` entry points."""
    names = [m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(",") if m.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"{PLUGIN_ENV} names module {name!r}, which cannot be imported: {e}") from None
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


_TRUSTED_MODULES: set[str] = set()


def trust_module(module: str) -> None:
    """Allow :func:`get_family` to import ``module`` (the training worker trusts its own run's recipe)."""
    _TRUSTED_MODULES.add(str(module))


def _trusted(module: str) -> bool:
    """Modules a checkpoint or recipe may make regcore import: regcore's own, the plug-ins named in
    ``REGCORE_PLUGINS``, modules trusted by :func:`trust_module`, and modules already imported. A file from
    elsewhere can therefore never make regcore import (and run) an arbitrary installed module."""
    import sys

    plugins = {m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(",") if m.strip()}
    return (
        module == "regcore"
        or module.startswith("regcore.")
        or module in plugins
        or module in _TRUSTED_MODULES
        or module in sys.modules
    )


def get_family(name: str, module: str | None = None) -> LearnedFamily:
    """The registered family ``name``; ``module`` (recorded in runs) is imported first when needed and
    trusted (see :func:`_trusted`)."""
    from regcore.methods.registry import all_specs

    all_specs()  # built-in families register on import
    if name not in _FAMILIES and module:
        if not isinstance(module, str) or not _trusted(module):
            raise ValueError(
                f"learned family {name!r} lives in module {module!r}, which regcore does not import "
                f"from a file; name it in {PLUGIN_ENV} to allow it"
            )
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(
                f"learned family {name!r} lives in module {module!r}, which cannot be imported: {e}"
            ) from None
    if name not in _FAMILIES:
        raise ValueError(f"unknown learned family {name!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def all_families() -> list[LearnedFamily]:
    """Every registered family, in registration order."""
    from regcore.methods.registry import all_specs

    all_specs()
    return list(_FAMILIES.values())


def dense_prediction(field: torch.Tensor, diffeomorphic: bool, int_steps: int) -> Prediction:
    """A network's vector field ``(B, n, *S)`` (voxels) as a Prediction: the displacement itself, or a
    stationary velocity integrated by scaling and squaring (``int_steps`` squarings) when diffeomorphic."""
    if not diffeomorphic:
        return Prediction(displacement=field)
    from regcore.spatial.svf import integrate_svf

    return Prediction(displacement=integrate_svf(field, steps=int_steps), velocity=field)
