"""Multi-atlas segmentation: register N labelled atlases to a target, warp their labels, fuse.

    result = segment(target, atlases, method="demons", fusion="staple", engine="serial")
    result.labels, result.agreement          # label Image and float Image on the target grid
    result.dice, result.atlas_dice           # per structure (when target_labels is given)

Registration (:mod:`regcore.segment.registration`) goes through :func:`regcore.batch.map_registrations`
(one :class:`regcore.batch.Task` per atlas, ``save_outputs=True``), so ``engine="ray"`` fans the atlases out
over Ray workers; each task warps the atlas image (linear) and its labels (nearest neighbour) onto the
target grid with the fixed(target) -> moving(atlas) displacement the method returns
(``warped = atlas o phi``). The warped images and labels are fused here
(:mod:`regcore.segment.fusion`, :mod:`regcore.segment.learned_fusion`).

The learned fusion needs training data that never shows the target: :func:`train_learned_fusion`
registers atlases to OTHER atlases (each of ``max_targets`` atlases in turn plays the target) and trains
a VoteNet on those pairs; :func:`segment` does it when ``fusion="learned"`` and no model is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regcore.image import Image
from regcore.segment.fusion import (
    Fusion,
    FusionResult,
    locally_weighted_vote,
    majority_vote,
    staple,
)
from regcore.segment.registration import (
    INLINE,  # noqa: F401 - re-exported
    Atlas,
    Progress,
    WarpedAtlas,
    _check_atlases,
    _labels_on_target,
    warp_atlases,
)

__all__ = [
    "INLINE",
    "Atlas",
    "SegmentationResult",
    "WarpedAtlas",
    "dice_summary",
    "fuse",
    "fuse_all",
    "segment",
    "train_learned_fusion",
    "warp_atlases",
]


@dataclass
class SegmentationResult:
    """The fused segmentation of one target.

    Attributes:
        labels: fused label Image on the target grid; agreement: float Image in [0, 1] (see FusionResult).
        fusion, method: the fusion and registration method used; engine: batch engine.
        warped: the registered atlases; dice: fused per-structure Dice (target labels known) else None;
        label_names: value -> name; warnings: atlases that failed, and similar notes.
    """

    labels: Image
    agreement: Image
    fusion: str
    method: str
    engine: str
    warped: list[WarpedAtlas]
    fused: FusionResult
    dice: dict[int, float] | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def dice_mean(self) -> float | None:
        return _nanmean(self.dice)

    @property
    def atlas_dice(self) -> dict[str, float | None]:
        """Mean Dice of each single registered atlas (target labels known)."""
        return {w.name: _nanmean(w.dice) for w in self.warped}

    def dice_rows(self) -> list[dict[str, Any]]:
        """One row per structure: fused Dice, best single atlas (highest mean Dice) Dice, mean single Dice."""
        if self.dice is None:
            return []
        return dice_summary({self.fusion: self.dice}, [w.dice or {} for w in self.warped], self.label_names)


def _nanmean(d: Mapping[int, float] | None) -> float | None:
    if not d:
        return None
    vals = [v for v in d.values() if v == v]
    return float(np.mean(vals)) if vals else None


def dice_summary(
    fused: Mapping[str, Mapping[int, float]],
    atlas_dice: Sequence[Mapping[int, float]],
    label_names: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Per-structure rows ``{structure, <fusion>..., best single atlas, mean single atlas}`` plus a "mean"
    row. The best single atlas is the one with the highest mean Dice over structures (an oracle choice)."""
    labels = sorted({lab for d in fused.values() for lab in d})
    means = [_nanmean(d) or 0.0 for d in atlas_dice]
    best = atlas_dice[int(np.argmax(means))] if atlas_dice else {}
    rows = []
    for lab in labels:
        row: dict[str, Any] = {"label": lab, "structure": (label_names or {}).get(lab, str(lab))}
        for name, d in fused.items():
            row[name] = d.get(lab, float("nan"))
        row["best single atlas"] = best.get(lab, float("nan"))
        row["mean single atlas"] = float(np.nanmean([d.get(lab, np.nan) for d in atlas_dice] or [np.nan]))
        rows.append(row)
    if rows:
        mean_row: dict[str, Any] = {"label": -1, "structure": "mean"}
        for key in [k for k in rows[0] if k not in ("label", "structure")]:
            mean_row[key] = float(np.nanmean([r[key] for r in rows]))
        rows.append(mean_row)
    return rows


# -- fusion --------------------------------------------------------------------------------------
def fuse(
    target: Image | np.ndarray,
    warped: Sequence[WarpedAtlas],
    fusion: str | Fusion = Fusion.STAPLE,
    *,
    learned=None,
    **options: Any,
) -> FusionResult:
    """Fuse registered atlases with ``fusion`` (``majority``, ``staple``, ``weighted``, ``learned``).

    ``learned``: a :class:`regcore.segment.learned_fusion.LearnedFusion` (required for ``"learned"``);
    ``options`` go to the fusion function (e.g. ``sigma``/``beta``/``joint`` for ``weighted``).
    """
    try:
        fusion = Fusion(fusion)
    except ValueError:
        raise ValueError(f"fusion must be one of {[f.value for f in Fusion]}, got {fusion!r}") from None
    if not warped:
        raise ValueError("warped must hold at least one registered atlas")
    labels = [w.labels for w in warped]
    images = [w.image for w in warped]
    if fusion is Fusion.MAJORITY:
        return majority_vote(labels)
    if fusion is Fusion.STAPLE:
        return staple(labels, **options)
    if fusion is Fusion.WEIGHTED:
        return locally_weighted_vote(target, images, labels, **options)
    if learned is None:
        raise ValueError("fusion 'learned' needs a trained model (learned=train_learned_fusion(...))")
    return learned.fuse(target, images, labels)


def fuse_all(
    target: Image,
    warped: Sequence[WarpedAtlas],
    fusions: Sequence[str],
    *,
    target_labels: Image | None = None,
    learned=None,
) -> dict[str, tuple[FusionResult, dict[int, float] | None]]:
    """Every fusion in ``fusions`` of the same registered atlases: ``{fusion: (result, per-structure Dice
    against target_labels or None)}``. Registration is the costly part; fusing again is cheap."""
    from regcore.metrics.overlap import dice_per_label

    truth = _labels_on_target(target_labels, target)
    out = {}
    for name in fusions:
        fused = fuse(target, warped, name, learned=learned)
        dice = None
        if truth is not None:
            dice = dice_per_label(truth, fused.labels, [int(v) for v in np.unique(truth) if v != 0])
        out[str(Fusion(name).value)] = (fused, dice)
    return out


def train_learned_fusion(
    atlases: Sequence[Atlas],
    method: str = "demons",
    overrides: Mapping[str, Any] | None = None,
    *,
    max_targets: int = 3,
    engine: str = "serial",
    device: str = "auto",
    steps: int = 200,
    time_limit_s: float | None = 60.0,
    progress: Progress | None = None,
    **train_options: Any,
):
    """Train a VoteNet on atlas-to-atlas registrations only (each of the first ``max_targets`` atlases is a
    pseudo-target for the others): the real target is never seen. Returns a ``LearnedFusion``."""
    from regcore.segment.learned_fusion import make_examples, train_votenet

    if len(atlases) < 2:
        raise ValueError(f"the learned fusion needs at least 2 atlases to train on, got {len(atlases)}")
    examples = []
    chosen = list(atlases)[: max(1, int(max_targets))]
    for k, pseudo in enumerate(chosen):
        others = [a for a in atlases if a.name != pseudo.name]

        def sub(frac: float, msg: str, k=k) -> None:
            if progress is not None:
                progress((k + frac) / (len(chosen) + 1), f"training data {k + 1}/{len(chosen)}: {msg}")

        warped, _ = warp_atlases(
            pseudo.image,
            others,
            method,
            overrides,
            target_labels=pseudo.labels,
            engine=engine,
            device=device,
            progress=sub,
        )
        t = pseudo.image.data[0].cpu().numpy().astype(np.float32)
        tl = pseudo.labels.data[0].cpu().numpy().astype(np.int64)
        examples += make_examples(t, tl, [w.image for w in warped], [w.labels for w in warped])
    if progress is not None:
        progress(len(chosen) / (len(chosen) + 1), f"training the VoteNet on {len(examples)} pairs")
    return train_votenet(examples, steps=steps, time_limit_s=time_limit_s, **train_options)


def segment(
    target: Image,
    atlases: Sequence[Atlas],
    method: str = "demons",
    fusion: str | Fusion = Fusion.STAPLE,
    engine: str = "serial",
    *,
    target_labels: Image | None = None,
    overrides: Mapping[str, Any] | None = None,
    learned=None,
    label_names: Mapping[int, str] | None = None,
    device: str = "auto",
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    fusion_options: Mapping[str, Any] | None = None,
) -> SegmentationResult:
    """Segment ``target`` from labelled ``atlases``: register (``method``, on ``engine``), warp, fuse.

    Args:
        target: intensity Image. atlases: :class:`Atlas` list (any grid; resampled through physical space).
        fusion: ``majority`` | ``staple`` | ``weighted`` | ``learned`` (see :mod:`regcore.segment.fusion`).
        engine: ``serial`` or ``ray`` (:func:`regcore.batch.map_registrations`), or ``inline``
            (:func:`regcore.register.run_registration` in a loop in this process, no task files).
        target_labels: the target's true labels, if known: per-structure Dice of the fused map and of each
            single atlas. learned: a trained LearnedFusion; None with ``fusion="learned"`` trains one on
            atlas-to-atlas registrations (:func:`train_learned_fusion`).
    Returns:
        :class:`SegmentationResult` (fused labels + agreement Images on the target grid, per-atlas Dice).
    """
    try:
        fusion = Fusion(fusion)
    except ValueError:
        raise ValueError(f"fusion must be one of {[f.value for f in Fusion]}, got {fusion!r}") from None
    from regcore.methods.registry import get

    get(method)  # unknown method -> ValueError naming it, before any work
    if not isinstance(target, Image) or target.is_labels:
        raise TypeError("target must be an intensity Image")
    atlases = _check_atlases(atlases, target)
    share = 0.5 if fusion is Fusion.LEARNED and learned is None else 1.0
    if fusion is Fusion.LEARNED and learned is None:
        learned = train_learned_fusion(
            atlases,
            method,
            overrides,
            engine=engine,
            device=device,
            progress=(lambda f, m: progress(share * f, m)) if progress else None,
        )

    def reg_progress(f: float, m: str) -> None:
        if progress is not None:
            progress((1 - share) + share * 0.95 * f, m)

    warped, warnings = warp_atlases(
        target,
        atlases,
        method,
        overrides,
        target_labels=target_labels,
        engine=engine,
        out_dir=out_dir,
        device=device,
        progress=reg_progress,
    )
    if progress is not None:
        progress(0.97, f"fusing {len(warped)} atlases ({fusion.value})")
    fused = fuse(target, warped, fusion, learned=learned, **dict(fusion_options or {}))
    names = dict(label_names or atlases[0].labels.label_names or {})
    names.pop(0, None)
    dice = None
    truth = _labels_on_target(target_labels, target)
    if truth is not None:
        from regcore.metrics.overlap import dice_per_label

        dice = dice_per_label(truth, fused.labels, [int(v) for v in np.unique(truth) if v != 0])
    labels_img = Image.from_array(
        fused.labels.astype(np.int64), target.geometry, is_labels=True, label_names=names, name="fused_labels"
    )
    agreement_img = Image.from_array(fused.agreement.astype(np.float32), target.geometry, name="agreement")
    if progress is not None:
        progress(1.0, "done")
    return SegmentationResult(
        labels=labels_img,
        agreement=agreement_img,
        fusion=fusion.value,
        method=method,
        engine=str(engine),
        warped=warped,
        fused=fused,
        dice=dice,
        label_names=names,
        warnings=warnings,
    )
