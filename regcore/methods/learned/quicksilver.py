"""Quicksilver-style teacher supervision (after Yang et al., "Quicksilver: fast predictive image
registration - a deep learning approach", NeuroImage 2017).

Quicksilver trains a network to predict what a slow optimiser (LDDMM) computes: the optimiser runs once
per training pair, its answers are stored, and the network regresses them; registering a new pair is
then one forward pass instead of an optimisation. Here the teacher is a classical regcore method
(default ``fireants``: on 2 mm OASIS training slices it had the best Dice of the three candidates at
about the cost of demons, see ``assets/models/quicksilver2d.md``) and the student is a U-Net that
regresses the teacher's DENSE DISPLACEMENT on the whole image (Quicksilver predicts LDDMM momenta patch
by patch; a dense displacement is the simpler, non-patched analogue; ``diffeomorphic = True`` makes the
student predict a stationary velocity whose exponential is compared with the teacher's field).

How the teacher fields reach the loss: the engine's ``supervision = "full"`` (or ``"dual"``) uses
``batch["true_displacement"]`` where ``batch["has_true"]``; slice pairs carry no true field, so
:meth:`Quicksilver.losses` fills it from a :class:`TeacherCache`. The cache is keyed by the pair's
LABEL maps (labels are never changed by intensity augmentation; a left-right flip is recognised and the
field flipped with it), built once by :func:`build_teacher_cache` for the training slices of a recipe
(``data = "slices"``: training positions only, :func:`regcore.data.slices.slice_pairs`) and saved under
``runs/`` (git-ignored). Pairs missing from the cache get their teacher field computed on the fly (kept
in memory). Everything lives on the model grid: images ``(B, 1, *T)`` in [0, 1], displacements
``(B, n, *T)`` in voxels of the fixed model grid, fixed -> moving (``warped = moving o (id + u)``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from regcore.config import param
from regcore.methods.learned.family import (
    LearnedFamily,
    Prediction,
    StepContext,
    dense_prediction,
    register_family,
)
from regcore.methods.registry import Supervision
from regcore.nets.conv_unet import ConvUNet

TEACHERS = ("fireants", "demons", "svf")
CACHE_FORMAT = "reglab-teacher-cache"


@dataclass(frozen=True)
class QuicksilverConfig:
    widths: tuple[int, ...] = param(
        (16, 32, 32, 32, 32), "U-Net channels per level, finest first.", range=(1, 512)
    )
    teacher: str = param(
        "fireants", "Classical method whose fields the network learns to reproduce.", choices=TEACHERS
    )
    teacher_cache: str = param(
        "",
        "File of cached teacher fields (.pt); empty = runs/quicksilver_teachers/<teacher>_<data hash>.pt "
        "(built on first use for data = slices).",
        advanced=True,
    )
    diffeomorphic: bool = param(
        False, "Predict a stationary velocity integrated by scaling and squaring (else a displacement)."
    )
    int_steps: int = param(7, "Scaling-and-squaring steps when diffeomorphic.", range=(1, 12))


# -- the teacher --------------------------------------------------------------------------------------


TEACHER_SETTINGS = {
    ("fireants", 2): {
        "preset": "custom",
        "levels": (2, 1),
        "iterations": (80, 50),
        "step_size": 0.5,
        "smooth_grad_sigma": 1.0,
        "window": 5,
        "lncc_eps": 1e-5,
        "optimizer": "adam",
    },
    ("fireants", 3): {
        "preset": "custom",
        "levels": (4, 2, 1),
        "iterations": (100, 50, 20),
        "step_size": 1.0,
        "smooth_grad_sigma": 0.75,
        "window": 5,
        "lncc_eps": 1e-5,
        "optimizer": "adam",
    },
    ("demons", 2): {"sigma_elastic": 1.5, "histogram_match": False},
    ("demons", 3): {"sigma_elastic": 1.5, "histogram_match": False},
}
"""The teachers' settings the shipped weights were trained with, pinned so that later changes to a method's
defaults (e.g. fireants' image-adaptive schedule) do not move the targets away from the student."""


def run_teacher(
    fixed: torch.Tensor, moving: torch.Tensor, teacher: str = "fireants", spacing_mm: float = 2.0
) -> tuple[torch.Tensor, float]:
    """The teacher's displacement for one pair on the model grid, and its wall time (s).

    Args:
        fixed, moving: ``(1, *T)`` images in [0, 1] on the same grid (2D or 3D).
        teacher: a name in :data:`TEACHERS` (run with :data:`TEACHER_SETTINGS`, else its defaults).
        spacing_mm: voxel size of the grid (recorded in the Images; the field is in voxels).
    Returns:
        ``(u, seconds)``: ``u`` ``(n, *T)`` float32 voxels, fixed -> moving.
    """
    from regcore.image import Image
    from regcore.methods import registry

    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    f, m = fixed.detach().float().cpu(), moving.detach().float().cpu()
    if f.shape != m.shape or f.shape[0] != 1 or f.ndim not in (3, 4):
        raise ValueError(f"fixed and moving must both be (1, *T), got {tuple(f.shape)} and {tuple(m.shape)}")
    spec = registry.get(teacher)
    fi = Image.from_array(f[0].numpy(), spacing=float(spacing_mm))
    mi = Image.from_array(m[0].numpy(), spacing=float(spacing_mm))
    t0 = time.perf_counter()
    config = spec.make_config(TEACHER_SETTINGS.get((teacher, f.ndim - 1), {}))
    result = spec.factory().register(fi, mi, config)
    return result.displacement[0].detach().float().cpu(), time.perf_counter() - t0


def label_key(fixed_labels: torch.Tensor, moving_labels: torch.Tensor) -> str:
    """Cache key of a pair: a hash of its two label maps ``(1, *T)`` (labels survive intensity augmentation).

    Raises:
        ValueError: when ``fixed_labels`` is all background (unlabelled pairs cannot be told apart).
    """
    if not bool((fixed_labels != 0).any()):
        raise ValueError(
            "fixed_labels is all background: Quicksilver looks teacher fields up by the pair's label maps, "
            "so train it on labelled pairs (data = slices) or on data with known true fields"
        )
    h = hashlib.sha1()
    for lab in (fixed_labels, moving_labels):
        a = lab.detach().cpu().to(torch.int32).contiguous()
        h.update(str(tuple(a.shape)).encode("utf-8"))
        h.update(a.numpy().tobytes())
    return h.hexdigest()


class TeacherCache:
    """Teacher displacements by :func:`label_key`; each ``(n, *T)`` voxels, fixed -> moving."""

    def __init__(self, meta: dict[str, Any] | None = None):
        self.meta: dict[str, Any] = dict(meta or {})
        self.fields: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def add(self, fixed_labels: torch.Tensor, moving_labels: torch.Tensor, field: torch.Tensor) -> None:
        self.fields[label_key(fixed_labels, moving_labels)] = field.detach().float().cpu()

    def lookup(self, fixed_labels: torch.Tensor, moving_labels: torch.Tensor) -> torch.Tensor | None:
        """The cached field of this pair, also when the pair was mirrored along some spatial axes (the
        field is mirrored with it and its components along those axes change sign); None if absent."""
        n = fixed_labels.ndim - 1
        for k in range(n + 1):
            for axes in itertools.combinations(range(n), k):
                dims = [a + 1 for a in axes]
                fl = fixed_labels.flip(dims) if dims else fixed_labels
                ml = moving_labels.flip(dims) if dims else moving_labels
                field = self.fields.get(label_key(fl, ml))
                if field is not None:
                    if not dims:
                        return field
                    out = field.flip(dims).clone()
                    out[list(axes)] *= -1
                    return out
        return None

    def save(self, path: str | Path) -> Path:
        """Write ``{format, meta (JSON text), keys, fields (N, n, *T)}``; loads with ``weights_only=True``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.fields)
        data = {
            "format": CACHE_FORMAT,
            "meta": json.dumps(self.meta),
            "keys": keys,
            "fields": torch.stack([self.fields[k] for k in keys]) if keys else torch.zeros(0),
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(data, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TeacherCache:
        path = Path(path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types on damaged files
            raise ValueError(
                f"teacher cache {path} is unreadable ({type(e).__name__}); delete it to rebuild"
            ) from None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise ValueError(f"teacher cache {path} is not a {CACHE_FORMAT} file")
        cache = cls(json.loads(data["meta"]))
        cache.fields = {k: data["fields"][i] for i, k in enumerate(data["keys"])}
        return cache


def default_cache_path(config: Any) -> Path:
    """Where a recipe's teacher cache lives: the family's ``teacher_cache``, else
    ``runs/quicksilver_teachers/<teacher>_<hash of data, spacing, canvas>.pt`` (relative to the cwd)."""
    fc = config.family_config
    if fc.teacher_cache:
        return Path(fc.teacher_cache)
    ident = json.dumps(
        [
            str(Path(config.data_path).resolve()) if config.data_path else "",
            str(config.data),
            float(config.spacing_mm),
            list(config.train_shape),
            fc.teacher,
        ]
    )
    digest = hashlib.sha1(ident.encode("utf-8")).hexdigest()[:10]
    return Path("runs") / "quicksilver_teachers" / f"{fc.teacher}_{digest}.pt"


def training_samples(config: Any) -> list[dict[str, torch.Tensor]]:
    """The recipe's training pairs on the model grid (``data = "slices"``: TRAINING slice positions only)."""
    from regcore.data.slices import slice_pairs
    from regcore.train.config import DataSource
    from regcore.train.datasets import pair_to_sample

    if config.data != DataSource.SLICES:
        raise ValueError(
            f"TrainConfig.data = {str(config.data)!r}: a teacher cache is built for data = 'slices' only "
            "(other sources get teacher fields computed on the fly)"
        )
    return [pair_to_sample(p, config) for p in slice_pairs(config.data_path, "train")]


def build_teacher_cache(
    samples: list[dict[str, torch.Tensor]],
    teacher: str,
    path: str | Path,
    spacing_mm: float = 2.0,
    log: Any = None,
) -> TeacherCache:
    """Run the teacher once on every sample (``moving``, ``fixed`` ``(1, *T)``, label maps) and save the cache.

    The cache's ``meta`` records the teacher, the pair count, the total and median teacher time (s).
    """
    cache = TeacherCache({"teacher": teacher, "spacing_mm": float(spacing_mm)})
    times = []
    for i, s in enumerate(samples):
        u, seconds = run_teacher(s["fixed"], s["moving"], teacher, spacing_mm)
        cache.add(s["fixed_labels"], s["moving_labels"], u)
        times.append(seconds)
        if log is not None and (i + 1) % 25 == 0:
            log(f"teacher {teacher}: {i + 1}/{len(samples)} pairs")
    times.sort()
    cache.meta.update(
        pairs=len(samples),
        unique_keys=len(cache),
        teacher_total_s=float(sum(times)),
        teacher_median_s=float(times[len(times) // 2]) if times else 0.0,
    )
    cache.save(path)
    return cache


# -- the family -----------------------------------------------------------------------------------------


@register_family
class Quicksilver(LearnedFamily):
    name = "quicksilver"
    title = "Quicksilver (learns a classical teacher)"
    paper = (
        "Yang, Kwitt, Styner, Niethammer, Quicksilver: fast predictive image registration, NeuroImage 2017"
    )
    summary = (
        "A slow but accurate classical method (the teacher, FireANTs by default) registers every training "
        "pair once and its deformation fields are stored. A U-Net then learns to reproduce those fields "
        "from the two images alone (mean squared error to the teacher's field). At registration time only "
        "the network runs: close to the teacher's result in a fraction of its time, and never better than "
        "the teacher it copies."
    )
    supervision = Supervision.FULL
    Config = QuicksilverConfig

    def __init__(self) -> None:
        self._caches: dict[str, TeacherCache] = {}

    def build(self, dims: int, config: QuicksilverConfig) -> nn.ModuleDict:
        return nn.ModuleDict({"net": ConvUNet(dims, widths=config.widths)})

    def divisor(self, dims: int, config: QuicksilverConfig) -> int:
        return ConvUNet.divisor_for(config.widths)

    def predict(
        self, nets, moving: torch.Tensor, fixed: torch.Tensor, config: QuicksilverConfig, settings=None
    ) -> Prediction:
        field = nets["net"](torch.cat([moving, fixed], 1))
        return dense_prediction(field, config.diffeomorphic, config.int_steps)

    # -- teacher supervision ---------------------------------------------------------------------------
    def teacher_cache(self, config: Any) -> TeacherCache:
        """The recipe's cache: loaded from disk, else built (data = slices) and saved, else empty (in memory)."""
        path = default_cache_path(config)
        key = str(path.resolve())
        if key not in self._caches:
            if path.is_file():
                cache = TeacherCache.load(path)
                if cache.meta.get("teacher") != config.family_config.teacher:
                    raise ValueError(
                        f"teacher cache {path} holds {cache.meta.get('teacher')!r} fields, but "
                        f"family_config.teacher = {config.family_config.teacher!r}"
                    )
            else:
                from regcore.train.config import DataSource

                if config.data == DataSource.SLICES:
                    cache = build_teacher_cache(
                        training_samples(config), config.family_config.teacher, path, config.spacing_mm
                    )
                else:
                    cache = TeacherCache({"teacher": config.family_config.teacher})
            self._caches[key] = cache
        return self._caches[key]

    def with_teacher(self, batch: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
        """``batch`` with ``true_displacement`` filled by the teacher where ``has_true`` is False."""
        has = batch["has_true"].bool()
        if bool(has.all()):
            return batch
        cache = self.teacher_cache(config)
        true = batch["true_displacement"].clone()
        for b in torch.nonzero(~has).flatten().tolist():
            fl, ml = batch["fixed_labels"][b], batch["moving_labels"][b]
            field = cache.lookup(fl, ml)
            if field is None:  # not cached (other data source): run the teacher now, keep it in memory
                field, _ = run_teacher(
                    batch["fixed"][b],
                    batch["moving"][b],
                    cache.meta.get("teacher", "fireants"),
                    float(config.spacing_mm),
                )
                cache.add(fl, ml, field)
            true[b] = field.to(true)
        return dict(batch, true_displacement=true, has_true=torch.ones_like(batch["has_true"]))

    def losses(self, nets, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        from regcore.train.config import SupervisionMode
        from regcore.train.objectives import registration_losses

        if SupervisionMode(ctx.config.supervision) in (SupervisionMode.FULL, SupervisionMode.DUAL):
            batch = self.with_teacher(batch, ctx.config)
        pred = self.predict(nets, batch["moving"], batch["fixed"], ctx.family_config)
        return registration_losses(ctx.config, pred, batch, ctx.similarity)
