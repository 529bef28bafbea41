"""The run folder: one registration run on disk, written by ``regcore register --out DIR`` and read back.

Run folder (``save_run`` / ``load_run``; written by ``regcore register --out DIR``)::

    warped.nii.gz          moving warped onto the fixed grid
    displacement.nii       ITK displacement field (LPS mm, fixed space, float32), uncompressed:
                           gzip saves < 10 % on a float field and costs seconds; ``save_run(...,
                           compress=True)`` (``regcore register --compress``) writes
                           ``displacement.nii.gz`` instead (gzip on all cores). Both are read back.
    fixed.nii.gz           the fixed image (a byte copy of the input file when it was read unchanged)
    moving.nii.gz          the moving image resampled onto the fixed grid (before registration; a byte
                           copy of the input file when it already lay on that grid)
    fixed_labels.nii.gz, moving_labels.nii.gz, warped_labels.nii.gz   label maps on the fixed grid (optional)
    fixed_landmarks.csv, moving_landmarks.csv                         landmarks in LPS mm (optional)
    metrics.json           regcore.metrics.evaluate row after registration
    metrics_before.json    the same row for "no registration"
    run.json               label, pair name, method, label names, the settings the method ran with
                           (every config field, "auto" values resolved for this image where the method
                           reports them; a dict in the loaded result's ``config``) and its stages (an
                           initial rigid/affine stage, with runtimes) when it had more than one

``save_run(record, dir)`` writes a :class:`~regcore.run_record.RunRecord`; ``load_run(dir)`` returns one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from regcore.config import settings_of
from regcore.data.pairs import Pair
from regcore.image import Image
from regcore.methods.base import RegistrationResult
from regcore.run_record import RunRecord

__all__ = ["RUN_FILES", "load_run", "save_run"]

RUN_FILES = {
    "warped": "warped.nii.gz",
    "displacement": "displacement.nii",
    "fixed": "fixed.nii.gz",
    "moving": "moving.nii.gz",
    "fixed_labels": "fixed_labels.nii.gz",
    "moving_labels": "moving_labels.nii.gz",
    "warped_labels": "warped_labels.nii.gz",
    "fixed_landmarks": "fixed_landmarks.csv",
    "moving_landmarks": "moving_landmarks.csv",
    "metrics": "metrics.json",
    "metrics_before": "metrics_before.json",
    "run": "run.json",
}
"""File names inside a run folder, by role."""
COMPRESSED_FILES = {"displacement": "displacement.nii.gz"}
"""Names of the roles written compressed by ``save_run(..., compress=True)`` (the others keep theirs)."""

INPUT_ROLES = ("fixed", "moving", "fixed_labels", "moving_labels")
"""Roles whose file may be a copy of an input (``save_run(..., sources=...)``)."""

REQUIRED_FILES = ("fixed", "moving", "warped", "displacement", "metrics")


def _json_default(v: Any):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _dump(obj: Any) -> str:
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return json.dumps(clean(obj), indent=2, default=_json_default)


def save_run(
    record: RunRecord,
    out_dir: str | Path,
    *,
    compress: bool = False,
    sources: Mapping[str, str | Path] | None = None,
    pending_metrics: Callable[[], dict] | None = None,
) -> dict[str, Path]:
    """Write the run folder described in the module docstring; returns ``{role: path}``.

    ``pending_metrics``: when the metrics after registration are still to be computed, the call that computes
    them (``regcore register`` passes ``Registration.evaluate``): it runs beside the writes and its dict is
    stored in ``record.metrics`` before ``metrics.json`` is written. None: ``record.metrics`` is final.

    ``sources``: role (``fixed``, ``moving``, ``fixed_labels``, ``moving_labels``) -> the ``.nii.gz`` file the
    record's image of that role was read from, unchanged (same voxel values, same grid, one channel). Those
    files are copied instead of decoded and re-encoded; the caller vouches for them (``regcore register``
    passes the inputs it neither resampled nor rewrote). Other roles and suffixes are written as usual.

    ``displacement.nii`` (``displacement.nii.gz`` with ``compress``) is an ITK displacement field (LPS mm,
    fixed space) that SimpleITK's ``DisplacementFieldTransform`` reads; label maps and images lie on the
    fixed grid. Written atomically (:func:`regcore.atomic.atomic_dir`): on any error no file of the run is
    left in ``out_dir``. The volumes are written on two threads (gzip releases the GIL).
    """
    for role in sources or {}:
        if role not in INPUT_ROLES:
            raise ValueError(f"sources: {role!r} is not one of the run folder's inputs {INPUT_ROLES}")
    if not isinstance(record, RunRecord):
        raise TypeError(f"record must be a RunRecord, got {type(record).__name__}")
    from regcore.atomic import atomic_dir

    with atomic_dir(out_dir) as tmp:  # all files or none: a failed write leaves no partial run folder
        written = _write_run(
            record, tmp, compress=compress, sources=sources or {}, pending_metrics=pending_metrics
        )
    return {role: Path(out_dir) / p.name for role, p in written.items()}


def _write_run(
    record: RunRecord,
    out: Path,
    *,
    compress: bool = False,
    sources: Mapping[str, str | Path],
    pending_metrics: Callable[[], dict] | None = None,
) -> dict[str, Path]:
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from regcore.io import save_displacement, save_image, save_landmarks

    r = record.result
    names = {**RUN_FILES, **(COMPRESSED_FILES if compress else {})}
    labels = {role: getattr(record, role) for role in ("fixed_labels", "moving_labels", "warped_labels")}

    def first_channel(img: Image) -> Image:  # a view, not a copy, for a 1-channel float32 CPU image
        return img.with_data(img.data[:1].float().cpu())

    jobs = {
        "warped": lambda: save_image(first_channel(r.warped), out / names["warped"]),
        "displacement": lambda: save_displacement(
            r.displacement.detach().float().cpu(), r.fixed.geometry, out / names["displacement"]
        ),
        "fixed": lambda: save_image(first_channel(r.fixed), out / names["fixed"]),
        "moving": lambda: save_image(first_channel(r.moving), out / names["moving"]),
    }
    for role, img in labels.items():
        if img is not None:
            jobs[role] = partial(save_image, img.with_data(img.data.cpu()), out / names[role])
    for role, src in sources.items():
        if role in jobs and str(src).lower().endswith(".nii.gz") and names[role].endswith(".nii.gz"):
            jobs[role] = partial(shutil.copyfile, src, out / names[role])
    # the metrics (CPU: surface distances, det J) run beside the writes (mostly memory copies, gzip and I/O)
    with ThreadPoolExecutor(max_workers=2) as side, ThreadPoolExecutor(max_workers=2) as pool:
        after_future = side.submit(pending_metrics) if pending_metrics is not None else None
        before_future = side.submit(lambda: record.before_metrics)
        futures = {role: pool.submit(job) for role, job in jobs.items()}
        paths: dict[str, Path] = {role: Path(f.result()) for role, f in futures.items()}
        before = before_future.result()
        if after_future is not None:
            record.metrics.update(after_future.result())
    for role in ("fixed_landmarks", "moving_landmarks"):
        lm = getattr(record.pair, role)
        if lm is not None:
            paths[role] = save_landmarks(lm, out / names[role])
    for role, data in (
        ("metrics", record.metrics),
        ("metrics_before", before),
        (
            "run",
            {
                "label": record.label,
                "pair": record.pair_name,
                "method": record.method,
                "label_names": {str(k): v for k, v in record.label_names.items()},
                "settings": settings_of(r.config),
                "stages": r.extras.get("stages"),  # e.g. an affine stage before it (regcore.pipeline)
            },
        ),
    ):
        paths[role] = out / names[role]
        paths[role].write_text(_dump(data), encoding="utf-8")
    return paths


def _run_file(d: Path, role: str) -> Path:
    """The file of ``role`` in run folder ``d``: its plain name, or the compressed one when only that exists."""
    plain = d / RUN_FILES[role]
    packed = d / COMPRESSED_FILES.get(role, RUN_FILES[role])
    return packed if not plain.is_file() and packed.is_file() else plain


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not readable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):  # a file's content, not an argument: ValueError like the rest
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")  # noqa: TRY004
    return data


def load_run(run_dir: str | Path) -> RunRecord:
    """Read a run folder written by :func:`save_run` (``regcore register --out DIR``) into a RunRecord.

    Raises ValueError naming the missing or unreadable file.
    """
    from regcore.io import load_displacement, load_image, load_landmarks

    d = Path(run_dir)
    if not d.is_dir():
        raise ValueError(f"{d}: not a folder (give the --out folder of `regcore register`)")
    for role in REQUIRED_FILES:
        if not _run_file(d, role).is_file():
            raise ValueError(
                f"{d / RUN_FILES[role]}: file not found (is {d} a folder written by "
                f"`regcore register --out`?)"
            )
    info = _read_json(d / RUN_FILES["run"]) if (d / RUN_FILES["run"]).is_file() else {}
    try:
        names = {int(k): str(v) for k, v in (info.get("label_names") or {}).items()}
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"{d / RUN_FILES['run']}: label_names must map label values to names") from None
    metrics = _read_json(d / RUN_FILES["metrics"])
    before = (
        _read_json(d / RUN_FILES["metrics_before"]) if (d / RUN_FILES["metrics_before"]).is_file() else None
    )
    fixed = load_image(d / RUN_FILES["fixed"], is_labels=False)
    moving = load_image(d / RUN_FILES["moving"], is_labels=False)
    warped = load_image(d / RUN_FILES["warped"], is_labels=False)
    u, geom = load_displacement(_run_file(d, "displacement"))
    for role, img in (("moving", moving), ("warped", warped)):
        if not img.geometry.same_grid(fixed.geometry):
            raise ValueError(
                f"{d / RUN_FILES[role]}: grid {img.shape} differs from {RUN_FILES['fixed']} "
                f"{fixed.shape}; a run folder holds images on the fixed grid"
            )
    if not geom.same_grid(fixed.geometry):
        raise ValueError(
            f"{_run_file(d, 'displacement')}: field grid {geom.shape} differs from "
            f"{RUN_FILES['fixed']} {fixed.shape} (shape, spacing, origin and direction must match)"
        )
    labels = {
        role: load_image(d / RUN_FILES[role], is_labels=True, label_names=names or None)
        if (d / RUN_FILES[role]).is_file()
        else None
        for role in ("fixed_labels", "moving_labels", "warped_labels")
    }
    landmarks = {
        role: load_landmarks(d / RUN_FILES[role], geometry=fixed.geometry)
        if (d / RUN_FILES[role]).is_file()
        else None
        for role in ("fixed_landmarks", "moving_landmarks")
    }
    result = RegistrationResult(
        method=str(metrics.get("method") or info.get("method") or "unknown"),
        fixed=fixed,
        moving=moving,
        warped=warped,
        displacement=u,
        runtime_s=float(metrics.get("runtime_s") or 0.0),
        peak_memory_mb=float(metrics.get("peak_memory_mb") or 0.0),
        device=str(metrics.get("device") or "cpu"),
        config=info.get("settings") if isinstance(info.get("settings"), dict) else None,
    )
    if labels["warped_labels"] is not None:
        result.extras["warped_labels"] = labels["warped_labels"]
    pair = Pair(
        name=str(info.get("pair") or d.name),
        fixed=fixed,
        moving=moving,
        fixed_labels=labels["fixed_labels"],
        moving_labels=labels["moving_labels"],
        label_names=names or None,
        **landmarks,
    )
    return RunRecord(
        pair=pair, result=result, metrics=metrics, label=str(info.get("label") or d.name), before=before
    )
