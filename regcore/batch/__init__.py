"""Batch work on one engine: benchmarks, sweeps, atlas / multi-atlas fan-out.

* :mod:`regcore.batch.manifest`: :class:`PairRef` (a pair by file paths), :func:`manifest_refs` (CSV manifest).
* :mod:`regcore.batch.tasks`: a :class:`Task` (method + pair + overrides) -> one result JSON; idempotent.
* :mod:`regcore.batch.code_version`: the fingerprint of regcore's source in each task's key (no stale reuse).
* :mod:`regcore.batch.records`: the result files ``OUT/tasks/<key>.json`` (atomic write, read back, skip done).
* :mod:`regcore.batch.engine`: ``serial`` and ``ray`` engines, :func:`run_tasks`.
* :mod:`regcore.batch.sweep`: grid expansion, sweep table, Pareto plots.
* :mod:`regcore.batch.progress`: counts, ETA, ``status.json``, the CLI progress bar.
* :mod:`regcore.batch.jobs`: background batch runs for the app (state on disk).

The generic entry point for code that fans registrations out (atlas building, multi-atlas
segmentation) is :func:`map_registrations`::

    from regcore.batch import Task, map_registrations
    tasks = [Task("fireants", pair, save_outputs=True) for pair in subject_pairs]
    records = map_registrations(tasks, engine="ray", out_dir="atlas_run/")
    warped = [r["outputs"]["warped"] for r in records if r["status"] == "ok"]

Imports are lazy: ``import regcore.batch`` does not import torch or ray.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["PairRef", "Task", "manifest_refs", "map_registrations", "run_tasks"]


def __getattr__(name: str):
    if name in ("PairRef", "manifest_refs"):
        from regcore.batch import manifest

        return getattr(manifest, name)
    if name == "Task":
        from regcore.batch.tasks import Task

        return Task
    if name == "run_tasks":
        from regcore.batch.engine import run_tasks

        return run_tasks
    raise AttributeError(f"module 'regcore.batch' has no attribute {name!r}")


def map_registrations(
    tasks: Iterable[Any],
    *,
    engine: str | Any = "serial",
    out_dir=None,
    address: str | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    bar: bool = False,
    callback=None,
) -> list[dict]:
    """Run many registrations on one engine; returns one result record per task, in order.

    Args:
        tasks: :class:`Task` objects, or tuples ``(method, pair)`` / ``(method, pair, overrides)`` where
            ``pair`` is a ``regcore.data.Pair`` or a :class:`PairRef`.
        engine: ``"serial"`` (this process), ``"ray"`` (embedded local Ray, or the cluster at ``address``).
        out_dir: batch folder: one ``tasks/<key>.json`` per finished task; a rerun skips those.
            Tasks with ``save_outputs=True`` also write warped images and fields to ``tasks/<key>/``.
    Returns:
        Records with ``status`` ("ok"/"failed"), ``error``, the metrics (``dice_mean``, ``folding_percent``,
        ``runtime_s``, ...), ``outputs`` (paths) and ``log``.
    """
    from regcore.batch.engine import run_tasks
    from regcore.batch.tasks import Task

    items = []
    for t in tasks:
        if isinstance(t, Task):
            items.append(t)
        elif isinstance(t, tuple) and len(t) in (2, 3):
            items.append(Task(t[0], t[1], dict(t[2]) if len(t) == 3 and t[2] else {}))
        else:
            raise TypeError(f"tasks must hold Task objects or (method, pair[, overrides]) tuples, got {t!r}")
    return run_tasks(
        items,
        out_dir,
        engine=engine,
        address=address,
        num_cpus=num_cpus,
        threads=threads,
        bar=bar,
        callback=callback,
    )
