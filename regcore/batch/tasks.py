"""A batch task: one registration (method + pair + overrides) -> one result JSON file; idempotent.

A :class:`Task` names what to run; :func:`execute_task` runs it anywhere (this process, a Ray
worker on another machine) and never raises for a data reason: a failure is recorded in the result
(``status = "failed"`` and ``error``), so an engine never retries it. Only a dead worker process
(killed, out of memory, machine lost) is retried, by the engine.

Files under a batch folder ``OUT`` (one set per task, named by :attr:`Task.key`)::

    OUT/tasks/<key>.json    the result record (written atomically: tmp file + os.replace)
    OUT/tasks/<key>.start   one line per attempt: time, host, pid (written by the worker when OUT
                            is reachable from it; the app counts these as "running")
    OUT/tasks/<key>.log     the task's progress messages, as they come
    OUT/tasks/<key>/        registration outputs (warped image, displacement, ...) when
                            ``Task.save_outputs`` (atlas building reads them back)

A task whose result file exists is done: :func:`execute_task` returns the stored record without
running again, and engines skip it before submitting. Pairs are given as :class:`PairRef` (file
paths, loaded by the worker: the data must be reachable from every worker, e.g. on a shared
filesystem) or as an in-memory ``regcore.data.Pair`` (shipped to the worker by the engine).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import platform
import secrets
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IDENTITY = "identity"
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
    "IDENTITY",
    "PAIR_KEYS",
    "PairRef",
    "Task",
    "done_records",
    "execute_task",
    "manifest_refs",
    "read_result",
    "result_path",
    "write_json_atomic",
]


@dataclass(frozen=True)
class PairRef:
    """A pair by file paths (absolute after :func:`manifest_refs`); loaded where the task runs."""

    name: str
    fixed: str
    moving: str
    fixed_labels: str | None = None
    moving_labels: str | None = None
    fixed_landmarks: str | None = None
    moving_landmarks: str | None = None
    label_names: str | None = None

    def load(self):
        """The ``regcore.data.Pair`` (raises ``ValueError`` naming the file that failed)."""
        from regcore.data.folder import load_pair

        files = {k: v for k, v in asdict(self).items() if k != "name"}
        return load_pair(**files, name=self.name)

    def identity(self) -> dict[str, Any]:
        return asdict(self)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def manifest_refs(manifest: str | os.PathLike) -> tuple[list[PairRef], list[str]]:
    """The pairs of a CSV manifest as :class:`PairRef` (nothing is loaded) and per-row error messages.

    Columns as :func:`regcore.data.load_manifest`; relative paths resolve against the CSV's folder. A row
    whose files do not exist is reported in the errors and left out; unreadable files surface later as
    failed tasks.
    """
    from regcore.data.folder import MANIFEST_COLUMNS

    p = Path(manifest)
    if not p.is_file():
        raise ValueError(f"pairs manifest must be an existing CSV file, got {str(p)!r}")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{p}: not a readable CSV manifest ({exc})") from exc
    header = [(h or "").strip().lower() for h in (rows[0].keys() if rows else [])]
    if not rows or not {"fixed", "moving"} <= set(header):
        raise ValueError(
            f"{p}: a pairs manifest needs a header with at least 'fixed,moving' "
            f"(all columns: {','.join(MANIFEST_COLUMNS)}), got {header}"
        )
    refs, errors = [], []
    unknown = set(header) - set(MANIFEST_COLUMNS)
    if unknown:
        errors.append(
            f"{p}: unknown column(s) {sorted(unknown)} ignored; known: {','.join(MANIFEST_COLUMNS)}"
        )
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        paths = {k: str((p.parent / row[k]).resolve()) if row.get(k) else None for k in MANIFEST_COLUMNS[1:]}
        if not paths["fixed"] or not paths["moving"]:
            errors.append(f"{p}: line {line}: 'fixed' and 'moving' must both be given")
            continue
        missing = [f"{k}={row[k]}" for k, v in paths.items() if v and not Path(v).exists()]
        if missing:
            errors.append(f"{p}: line {line}: file(s) not found: {', '.join(missing)}")
            continue
        name = row.get("name") or f"{_stem(paths['fixed'])} <- {_stem(paths['moving'])}"
        refs.append(PairRef(name=name, **paths))
    return refs, errors


@dataclass(frozen=True)
class Task:
    """One registration to run.

    Attributes:
        method: registry name, or ``"identity"`` (no registration: the "before" row).
        pair: a :class:`PairRef` or an in-memory ``regcore.data.Pair``.
        overrides: method parameters (strings are parsed as ``--set key=value``).
        label: the name of this variant in tables (default: the method; sweeps use ``demons[sigma=2]``).
        device: ``auto``, ``cpu`` or ``cuda``.
        save_outputs: also write the registration outputs to ``OUT/tasks/<key>/`` (atlas fan-out).
    """

    method: str
    pair: Any
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    device: str = "auto"
    save_outputs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise TypeError(f"Task.method must be a method name, got {self.method!r}")
        if not isinstance(self.overrides, Mapping):
            raise TypeError(f"Task.overrides must be a mapping, got {type(self.overrides).__name__}")
        if not hasattr(self.pair, "name"):
            raise TypeError(
                f"Task.pair must be a PairRef or a regcore.data.Pair, got {type(self.pair).__name__}"
            )
        object.__setattr__(self, "overrides", dict(self.overrides))
        if not self.label:
            object.__setattr__(self, "label", self.method)

    @property
    def pair_name(self) -> str:
        return str(self.pair.name)

    @property
    def key(self) -> str:
        """Stable id of (method, overrides, pair, device, outputs): the result file's name."""
        pair = self.pair.identity() if isinstance(self.pair, PairRef) else {"name": self.pair_name}
        ident = {
            "method": self.method,
            "overrides": {str(k): str(v) for k, v in sorted(self.overrides.items())},
            "pair": pair,
            "device": self.device,
            "outputs": self.save_outputs,
        }
        return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (stored in the result record)."""
        return {
            "key": self.key,
            "method": self.method,
            "label": self.label,
            "pair": self.pair_name,
            "overrides": {str(k): v for k, v in self.overrides.items()},
            "device": self.device,
        }


# -- files --------------------------------------------------------------------------------------
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


# -- running ------------------------------------------------------------------------------------
def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def metrics_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-safe columns a batch keeps from ``regcore.metrics.evaluate``'s dict."""
    row: dict[str, Any] = {k: _finite(metrics.get(k)) for k in PAIR_KEYS}
    row["device"] = metrics.get("device")
    row["dice"] = {str(k): _finite(v) for k, v in (metrics.get("dice") or {}).items()}
    row["warnings"] = [str(w) for w in (metrics.get("warnings") or [])]
    return row


def set_threads(threads: int | None) -> None:
    """torch and numba threads of this process (a Ray worker runs one task per CPU: 1 thread each)."""
    if not threads:
        return
    import torch

    torch.set_num_threads(int(threads))
    try:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001, S110 - numba is optional here
        pass


@contextmanager
def threads_for_block(threads: int | None) -> Iterator[None]:
    """:func:`set_threads` for the block, torch's and numba's previous counts restored afterwards (serial engine)."""
    if not threads:
        yield
        return
    import torch

    saved_torch = torch.get_num_threads()
    try:
        import numba

        saved_numba = numba.get_num_threads()
    except Exception:  # noqa: BLE001 - numba is optional
        saved_numba = None
    set_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved_torch)
        if saved_numba is not None:
            import numba

            numba.set_num_threads(saved_numba)


def _reachable(out_dir: str | os.PathLike | None) -> Path | None:
    """The batch folder if this process can write into it (workers on other machines may not)."""
    if out_dir is None:
        return None
    p = Path(out_dir)
    return p if p.is_dir() and os.access(p, os.W_OK) else None


def execute_task(
    task: Task,
    out_dir: str | os.PathLike | None = None,
    *,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``task`` and return its result record; never raises for a data or method error.

    When ``out_dir`` is reachable from this process the record is also written there (atomically),
    and an existing record is returned without running again (idempotent).
    """
    out = _reachable(out_dir)
    tdir = out / TASKS_DIR if out else None
    if tdir is not None:
        done = read_result(tdir / f"{task.key}.json")
        if done is not None:
            return done
        tdir.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    host, pid, started = platform.node(), os.getpid(), time.time()
    attempts = 1
    if tdir is not None:
        with open(tdir / f"{task.key}.start", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": started, "host": host, "pid": pid}) + "\n")
        attempts = len((tdir / f"{task.key}.start").read_text(encoding="utf-8").splitlines())
    lines: list[str] = []

    def say(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        lines.append(line)
        if tdir is not None:
            with open(tdir / f"{task.key}.log", "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        if log is not None:
            log(msg)

    state = {"last": -1}

    def progress(p) -> bool:
        tenth = int(getattr(p, "fraction", 0.0) * 10)
        if tenth != state["last"]:
            state["last"] = tenth
            say(f"{getattr(p, 'fraction', 0.0):4.0%} {getattr(p, 'message', '')}")
        return True

    say(f"{task.label} on {task.pair_name} (host {host}, pid {pid}, attempt {attempts})")
    record: dict[str, Any] = {
        **task.describe(),
        "status": OK,
        "host": host,
        "pid": pid,
        "attempts": attempts,
        "started": started,
    }
    try:
        pair = task.pair.load() if isinstance(task.pair, PairRef) else task.pair
        if task.method == IDENTITY:
            from regcore.bench import evaluate_identity_pair

            result, metrics = None, evaluate_identity_pair(pair)
        else:
            from regcore.register import run_pair

            result, metrics = run_pair(
                pair, task.method, task.overrides, device=task.device, progress=progress
            )
        record.update(metrics_row(metrics))
        if task.save_outputs and result is not None:
            if tdir is None:
                raise ValueError(
                    f"save_outputs needs the batch folder {out_dir} to be writable from this worker "
                    f"({host}); put it on a shared filesystem"
                )
            from regcore.run_folder import save_run
            from regcore.run_record import RunRecord

            paths = save_run(RunRecord(pair, result, metrics, label=task.label), tdir / task.key)
            record["outputs"] = {k: str(v) for k, v in paths.items()}
        say("done: " + ", ".join(f"{k}={record[k]:.4g}" for k in PAIR_KEYS if record.get(k) is not None))
    except Exception as exc:  # noqa: BLE001 - a data/method error is recorded, never retried
        record["status"] = FAILED
        record["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())
        say(f"failed: {record['error']}")
        for ln in traceback.format_exc().rstrip().splitlines()[-6:]:
            say("  " + ln)
    record["finished"] = time.time()
    record["wall_s"] = record["finished"] - started
    record["log"] = lines[-200:]
    if tdir is not None:
        write_json_atomic(tdir / f"{task.key}.json", record)
    return record


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
