"""Classical groupwise, unbiased template building (the idea of ANTs' antsMultivariateTemplateConstruction2).

Start from the mean of the affinely aligned subjects (or of the subjects as they are), then repeat:

1. register every subject (moving) to the current template T (fixed) with any registry method; each
   gives a displacement ``u_k`` on the template grid, template voxel -> subject voxel
   (``warped_k = subject_k o (id + u_k)``, the house convention);
2. un-bias: if T sits off the centre of the group, every ``u_k`` shares a common part, the mean field
   ``u_bar = mean_k u_k``. Moving the template by the inverse of ``id + u_bar`` puts it at the centre.
   ``s`` = the displacement of ``(id + step * u_bar)^-1`` (:func:`template_shift`, the fixed-point
   inversion of :func:`regcore.spatial.compose.invert`; to first order ``s = -step * u_bar``);
3. average the subjects warped into the shifted frame:
   ``T_new = mean_k subject_k o (id + a_k) o (id + u_k) o (id + s)`` (``a_k`` the initial affine field).
   The composed fields (:func:`regcore.spatial.compose.compose`) resample each subject ONCE; warping the
   average instead (``mean_k warped_k o (id + s)``, the same to first order) would blur the template
   by one more interpolation at every update.

The registrations of one pass fan out through :func:`regcore.batch.map_registrations`, so
``engine="ray"`` runs them in parallel (local Ray or a cluster; the work folder must then be on a
filesystem every worker reaches).

Every template ``T_0 .. T_n`` is measured (:mod:`regcore.atlas.measures`): sharpness, the mean
subject-to-template distance (mm) and the mean Dice of the subjects' labels warped to it against the
template's label map (their majority vote), plus the runtime. With ``evaluate_final`` (default) the
final template is registered to once more, so its distance and Dice are measured like the others.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from regcore.atlas.inputs import (
    SMALL_GRID_VOXELS,
    check_build_arguments,
    prepare_initial_template,
    prepare_subjects,
)
from regcore.atlas.measures import agreement_dice, majority_vote, mean_distance_mm, sharpness
from regcore.atlas.result import AtlasInit, AtlasIteration, AtlasResult
from regcore.atlas.subjects import MIN_SUBJECTS, AtlasSubject
from regcore.batch.tasks import threads_for_block
from regcore.image import Image

if TYPE_CHECKING:
    from regcore.batch.engine import KeptOpen

__all__ = ["AtlasInit", "AtlasIteration", "AtlasResult", "build_template", "template_shift"]

AtlasProgress = Callable[[float, str], Any]
"""``progress(fraction 0..1, message)``; its return value is ignored."""


def template_shift(mean_displacement: torch.Tensor, step: float = 1.0) -> torch.Tensor:
    """Displacement ``s`` ``(B, n, *S)`` voxels of ``(id + step * u_bar)^-1``: ``T_new = A o (id + s)``.

    ``mean_displacement`` is the mean subject displacement ``u_bar`` ``(B, n, *S)`` on the template grid
    (template -> subject voxels). For a constant ``u_bar`` the shift is exactly ``-step * u_bar``.
    """
    from regcore.spatial.compose import invert

    if not isinstance(mean_displacement, torch.Tensor):
        raise TypeError(f"mean_displacement must be a torch.Tensor, got {type(mean_displacement).__name__}")
    if not 0.0 < float(step) <= 1.0:
        raise ValueError(f"step must be in (0, 1], got {step!r}")
    return invert(float(step) * mean_displacement.float(), iterations=50, tolerance=1e-3)


# -- one registration pass ---------------------------------------------------------------------------
@dataclass
class _Pass:
    warped: list[torch.Tensor | None]  # (1, *S) per subject, on the template grid
    displacement: list[torch.Tensor | None]  # (1, n, *S) voxels, template -> subject
    warped_labels: list[np.ndarray | None]  # (*S)
    errors: list[str]

    def ok(self) -> list[int]:
        return [k for k, w in enumerate(self.warped) if w is not None]


def _register_pass(
    template: Image,
    subjects: Sequence[AtlasSubject],
    method: str,
    overrides: Mapping[str, Any],
    *,
    tag: str,
    engine: KeptOpen,
    work: Path,
    device: str,
    label_names,
    on_done: Callable[[int, int], None],
) -> _Pass:
    """Register every subject (moving) to ``template`` (fixed); read the outputs back from the batch folder."""
    from regcore.batch import map_registrations
    from regcore.batch.tasks import Task
    from regcore.data.pairs import Pair
    from regcore.io import load_displacement, load_image

    tasks = [
        Task(
            method,
            Pair(
                name=f"atlas {tag}: {k:03d} {s.name}",
                fixed=template,
                moving=s.image,
                moving_labels=s.labels,
                label_names=label_names,
            ),
            dict(overrides),
            device=device,
            save_outputs=True,
        )
        for k, s in enumerate(subjects)
    ]

    def callback(status: dict) -> None:
        on_done(int(status.get("done", 0) or 0) + int(status.get("failed", 0) or 0), len(tasks))

    records = map_registrations(tasks, engine=engine, out_dir=work / tag.replace(" ", "_"), callback=callback)
    by_key = {r.get("key"): r for r in records}
    out = _Pass([], [], [], [])
    for task, subject in zip(tasks, subjects, strict=True):
        rec = by_key.get(task.key)
        if rec is None or rec.get("status") != "ok" or "outputs" not in rec:
            err = (rec or {}).get("error", "no result (stopped)")
            out.errors.append(f"{tag}: {method} on {subject.name} failed: {err}")
            out.warped.append(None)
            out.displacement.append(None)
            out.warped_labels.append(None)
            continue
        files = rec["outputs"]
        out.warped.append(load_image(files["warped"], is_labels=False).data[:1].float())
        out.displacement.append(load_displacement(files["displacement"])[0].float())
        lab = files.get("warped_labels")
        out.warped_labels.append(load_image(lab, is_labels=True).numpy().astype(np.int64) if lab else None)
    if len(out.ok()) < MIN_SUBJECTS:
        first = out.errors[0] if out.errors else "no registration succeeded"
        raise RuntimeError(f"{tag}: only {len(out.ok())} of {len(subjects)} registrations succeeded; {first}")
    return out


def _shifted_average(
    subjects: Sequence[AtlasSubject], p: _Pass, shift: torch.Tensor, pre: Sequence | None
) -> torch.Tensor:
    """``mean_k subject_k o (id + a_k) o (id + u_k) o (id + s)`` ``(1, *S)``.

    ``subjects`` are on the template grid, ``pre`` their initial affine fields ``a_k`` (or None). Each
    subject is resampled ONCE through its composed field: warping the average, or warping the already
    aligned subjects, would add interpolations that blur the template a little more at every update.
    """
    from regcore.spatial.compose import compose
    from regcore.spatial.warp import warp

    out = []
    for k in p.ok():
        u = compose(p.displacement[k], shift)
        if pre is not None:
            u = compose(pre[k], u)
        out.append(warp(subjects[k].image.data[None].float(), u, padding_mode="border")[0])
    return torch.stack(out).mean(0)


def _mean(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
    return torch.stack([t for t in tensors if t is not None]).mean(0)


def _label_measures(
    p: _Pass, n_subjects: int, geometry, label_names
) -> tuple[Image | None, float | None, tuple[float, ...]]:
    """Majority-vote label map, mean Dice of the warped labels vs it, per-subject Dice (NaN where none)."""
    maps: dict[int, np.ndarray] = {}
    for k in p.ok():
        lab = p.warped_labels[k]
        if lab is not None:
            maps[k] = lab
    if not maps:
        return None, None, ()
    vote = majority_vote(list(maps.values()))
    scores = dict(zip(maps, agreement_dice(list(maps.values()), vote), strict=True))
    per_subject = tuple(scores.get(k, float("nan")) for k in range(n_subjects))
    labels = Image.from_array(vote, geometry, is_labels=True, label_names=label_names, name="template_labels")
    return labels, float(np.nanmean(list(scores.values()))), per_subject


def _distances(p: _Pass, n_subjects: int, spacing) -> tuple[float, tuple[float, ...]]:
    per = {k: mean_distance_mm(p.displacement[k], spacing) for k in p.ok()}
    return float(np.mean(list(per.values()))), tuple(per.get(k, float("nan")) for k in range(n_subjects))


def build_template(
    subjects: Sequence[AtlasSubject],
    method: str = "demons",
    iterations: int = 4,
    overrides: Mapping[str, Any] | None = None,
    *,
    init: str = AtlasInit.AFFINE,
    affine_method: str = "sitk_affine_mi",
    affine_overrides: Mapping[str, Any] | None = None,
    step: float = 1.0,
    normalise: bool = True,
    initial_template: Image | None = None,
    evaluate_final: bool = True,
    engine: str | Any = "serial",
    address: str | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    work_dir: str | Path | None = None,
    keep_work: bool = False,
    progress: AtlasProgress | None = None,
) -> AtlasResult:
    """Build an unbiased template of ``subjects`` by iterated registration to the current mean.

    Args:
        subjects: two or more :class:`AtlasSubject` (labels optional; all 2D or all 3D). The template
            lives on the first subject's grid; the others are resampled onto it through physical space.
        method: registry method of the deformable passes (``regcore methods``); ``overrides`` its settings.
        iterations: template updates ``n``; templates ``T_0 .. T_n`` are measured.
        init: ``"affine"``: ``T_0`` = mean of the subjects affinely aligned (``affine_method``) to the
            plain mean, and the passes register these aligned subjects; ``"mean"``: ``T_0`` = plain mean.
        step: fraction of the mean displacement removed per update (ANTs' gradient step), in (0, 1].
        normalise: percentile-normalise each subject to [0, 1] first (subjects of different scanners).
        initial_template: start from this image (resampled onto the first subject's grid) instead of
            the mean, like ANTs' ``-z``; with ``init="affine"`` the subjects are aligned to it first.
        evaluate_final: register to ``T_n`` once more to measure its distance and Dice.
        engine, address, num_cpus: :func:`regcore.batch.map_registrations` engine options.
        threads: torch/numba threads per registration (serial: this process, restored at the end; ray:
            each task); None = 1 on small grids (< ``SMALL_GRID_VOXELS``), else the default.
        device: ``auto``, ``cpu`` or ``cuda`` for each registration.
        work_dir: folder for the batch files of each pass (default a temporary folder, deleted at the
            end unless ``keep_work``). With Ray on a cluster it must be on a shared filesystem.
        progress: ``progress(fraction, message)``.
    Returns:
        :class:`AtlasResult` (template, its labels, per-iteration history, every template).
    """
    from regcore.batch.engine import KeptOpen, make_engine
    from regcore.spatial.warp import warp_labels

    check_build_arguments(subjects, method, iterations, step, init)
    overrides = dict(overrides or {})
    if init == AtlasInit.AFFINE:
        check_build_arguments(subjects, affine_method, 0, 1.0, AtlasInit.MEAN)
    say = progress or (lambda fraction, message: None)
    passes_total = (1 if init == AtlasInit.AFFINE else 0) + iterations + (1 if evaluate_final else 0)
    passes_done = [0]

    def on_done(done: int, total: int, label: str) -> None:
        frac = (passes_done[0] + done / max(total, 1)) / max(passes_total, 1)
        say(min(frac, 1.0), f"{label}: {done}/{total} registrations")

    work_root = Path(work_dir) if work_dir is not None else None
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    if threads is None and math.prod(subjects[0].image.shape) < SMALL_GRID_VOXELS:
        threads = 1
    serial = isinstance(engine, str) and engine == "serial"
    work = Path(tempfile.mkdtemp(prefix="atlas-", dir=work_root))
    eng = KeptOpen(
        make_engine(engine, address=address, num_cpus=num_cpus, threads=None if serial else threads)
    )
    warnings: list[str] = []
    with ExitStack() as cleanup:  # on the way out: threads restored, engine closed, work folder removed
        if not keep_work:
            cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        cleanup.callback(eng.shutdown)
        cleanup.enter_context(threads_for_block(threads if serial else None))
        t0 = time.perf_counter()
        subs = prepare_subjects(subjects, normalise)
        geometry = subs[0].image.geometry
        label_names = next((s.labels.label_names for s in subs if s.labels is not None), None)

        def run_pass(template: Image, items: Sequence[AtlasSubject], meth: str, ov, tag: str) -> _Pass:
            result = _register_pass(
                template,
                items,
                meth,
                ov,
                tag=tag,
                engine=eng,
                work=work,
                device=device,
                label_names=label_names,
                on_done=lambda d, t: on_done(d, t, tag),
            )
            passes_done[0] += 1
            warnings.extend(result.errors)
            return result

        template = Image(_mean([s.image.data for s in subs]), geometry, name="mean")
        if initial_template is not None:
            template = prepare_initial_template(initial_template, subs[0].image, normalise)
        originals, pre_fields = list(subs), None  # what each template is resampled from, and through
        if init == AtlasInit.AFFINE:
            aligned = run_pass(template, subs, affine_method, dict(affine_overrides or {}), "affine")
            keep = aligned.ok()
            originals = [subs[k] for k in keep]
            pre_fields = [aligned.displacement[k] for k in keep]
            subs = [
                dataclasses.replace(
                    subs[k],
                    image=subs[k].image.with_data(aligned.warped[k]),
                    labels=subs[k].labels.with_data(torch.from_numpy(aligned.warped_labels[k])[None])
                    if subs[k].labels is not None and aligned.warped_labels[k] is not None
                    else None,
                )
                for k in keep
            ]
            if initial_template is None:
                template = Image(_mean([s.image.data for s in subs]), geometry, name="affine mean")
        initial_labels = [s.labels.numpy().astype(np.int64) for s in subs if s.labels is not None]
        initial_dice = (
            float(np.mean(agreement_dice(initial_labels, majority_vote(initial_labels))))
            if initial_labels
            else None
        )

        history: list[AtlasIteration] = []
        templates: list[Image] = []
        template_labels: Image | None = None
        started = t0
        for i in range(iterations + 1):
            template = template.with_data(template.data, name=f"template_{i}")
            templates.append(template)
            last = i == iterations
            if last and not evaluate_final:  # measured by sharpness only; labels moved with the shift
                history.append(
                    AtlasIteration(i, sharpness(template), None, None, time.perf_counter() - started)
                )
                break
            p = run_pass(template, subs, method, overrides, f"iteration {i}")
            template_labels, dice, per_dice = _label_measures(p, len(subs), geometry, label_names)
            distance, per_dist = _distances(p, len(subs), geometry.spacing)
            ok = p.ok()
            history.append(
                AtlasIteration(
                    i,
                    sharpness(template),
                    distance,
                    dice,
                    time.perf_counter() - started,
                    registered=len(ok),
                    failed=len(subs) - len(ok),
                    subject_dice=per_dice,
                    subject_distance_mm=per_dist,
                )
            )
            say(
                min(passes_done[0] / max(passes_total, 1), 1.0),
                f"template {i}: sharpness {history[-1].sharpness:.4g}, distance {distance:.3g} mm"
                + (f", Dice {dice:.3f}" if dice is not None else ""),
            )
            if last:
                break
            started = time.perf_counter()
            shift = template_shift(_mean(p.displacement), step)  # (1, n, *S)
            template = Image(_shifted_average(originals, p, shift, pre_fields), geometry)
            if not evaluate_final and i + 1 == iterations and template_labels is not None:
                moved = warp_labels(template_labels.data[None], shift)[0]
                template_labels = template_labels.with_data(moved)
        if template_labels is not None:
            template_labels = template_labels.with_data(template_labels.data, name="template_labels")
        return AtlasResult(
            template=templates[-1].with_data(templates[-1].data, name="template"),
            labels=template_labels,
            history=history,
            templates=templates,
            method=method,
            overrides=overrides,
            init=str(AtlasInit(init).value),
            step=float(step),
            subjects=[s.name for s in subs],
            initial_alignment_dice=initial_dice,
            warnings=warnings,
        )
