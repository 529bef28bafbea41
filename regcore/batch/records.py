"""Task record files on disk: where a task's result JSON lives, how it is written and read back.

Files under a batch folder ``OUT`` (one set per task, named by ``Task.key``)::

    OUT/tasks/<key>.json    the result record (written atomically: tmp file + os.replace)
    OUT/tasks/<key>.start   one line per attempt: time, host, pid (written by the worker when OUT
                            is reachable from it; the app counts these as "running")
    OUT/tasks/<key>.log     the task's progress messages, as they come
    OUT/tasks/<key>/        registration outputs (warped image, displacement, ...) when
                            ``Task.save_outputs`` (atlas building reads them back)

A record is a JSON object: the task's summary (``Task.describe()``), ``status`` (:data:`OK` or
:data:`FAILED`, with ``error`` when failed), the metric columns of :func:`metrics_row` (:data:`PAIR_KEYS`,
e.g. ``dice_mean`` in [0, 1], ``hd95_mean_mm`` in mm, ``runtime_s`` in s; null when missing or not
finite), ``started``/``finished`` (epoch seconds), ``wall_s`` and ``log``. A task whose result file
exists is done: engines skip it before submitting.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regcore.batch.tasks import Task

PAIR_KEYS = (
    "dice_mean",
    "hd95_mean_mm",
    "tre_mean_mm",
    "folding_percent",
    "sdlogj",
    "runtime_s",
    "peak_memory_mb",
)
TASKS_DIR = "tasks"
OK, FAILED = "ok", "failed"

__all__ = [
    "FAILED",
    "OK",
    "PAIR_KEYS",
    "TASKS_DIR",
    "done_records",
    "failure_record",
    "metrics_row",
    "finite_or_none",
    "read_result",
    "result_path",
    "write_json_atomic",
]


def result_path(out_dir: str | os.PathLike, task: Task) -> Path:
    return Path(out_dir) / TASKS_DIR / f"{task.key}.json"


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON via a unique tmp file + ``os.replace``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _json_default(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else None


def read_result(path: str | os.PathLike) -> dict | None:
    """A stored result record, or None when absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("status") in (OK, FAILED) else None


def done_records(
    out_dir: str | os.PathLike | None, tasks: list[Task], *, retry_failed: bool = False
) -> dict[str, dict]:
    """``{key: record}`` of the tasks already finished in ``out_dir`` (failed ones too, unless ``retry_failed``)."""
    if out_dir is None:
        return {}
    out = {}
    for t in tasks:
        rec = read_result(result_path(out_dir, t))
        if rec is not None and (rec["status"] == OK or not retry_failed):
            out[t.key] = rec
    return out


def finite_or_none(v) -> float | None:
    """``v`` as a finite float, or None (missing, not a number, NaN or infinite): JSON-safe."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def metrics_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-safe columns a batch keeps from ``regcore.metrics.evaluate``'s dict."""
    row: dict[str, Any] = {k: finite_or_none(metrics.get(k)) for k in PAIR_KEYS}
    row["device"] = metrics.get("device")
    row["dice"] = {str(k): finite_or_none(v) for k, v in (metrics.get("dice") or {}).items()}
    row["warnings"] = [str(w) for w in (metrics.get("warnings") or [])]
    return row


def failure_record(task: Task, error: str, **extra: Any) -> dict[str, Any]:
    """The record of a task that never returned (its worker died more often than the engine retries)."""
    now = time.time()
    return {
        **task.describe(),
        "status": FAILED,
        "error": error,
        "started": now,
        "finished": now,
        "wall_s": 0.0,
        "log": [error],
        **extra,
    }
