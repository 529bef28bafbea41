"""A batch task: one registration (method + pair + overrides) -> one result JSON file; idempotent.

A :class:`Task` names what to run; :func:`execute_task` runs it anywhere (this process, a Ray
worker on another machine) and never raises for a data reason: a failure is recorded in the result
(``status = "failed"`` and ``error``), so an engine never retries it. Only a dead worker process
(killed, out of memory, machine lost) is retried, by the engine.

The files a task writes under a batch folder (result record, ``.start``, ``.log``, outputs) are
described in :mod:`regcore.batch.records`. A task whose result file exists is done:
:func:`execute_task` returns the stored record without running again. Pairs are given as
:class:`~regcore.batch.manifest.PairRef` (file paths, loaded by the worker: the data must be reachable
from every worker, e.g. on a shared filesystem) or as an in-memory ``regcore.data.Pair`` (shipped to
the worker by the engine).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regcore.batch.code_version import code_fingerprint
from regcore.batch.manifest import PairRef
from regcore.batch.records import (
    FAILED,
    OK,
    PAIR_KEYS,
    TASKS_DIR,
    metrics_row,
    read_result,
    write_json_atomic,
)

IDENTITY = "identity"

__all__ = ["IDENTITY", "Task", "execute_task", "set_threads", "threads_for_block"]


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
        code: the regcore code version the task is meant for (:func:`code_fingerprint` of the process that
            built it; a worker keeps it, so the driver and its workers name the result file alike).
    """

    method: str
    pair: Any
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    device: str = "auto"
    save_outputs: bool = False
    code: str = field(default_factory=code_fingerprint)

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
        """Stable id of (method, overrides, pair, device, outputs, code): the result file's name."""
        pair = self.pair.identity() if isinstance(self.pair, PairRef) else {"name": self.pair_name}
        ident = {
            "method": self.method,
            "overrides": {str(k): str(v) for k, v in sorted(self.overrides.items())},
            "pair": pair,
            "device": self.device,
            "outputs": self.save_outputs,
            "code": self.code,
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
            "code": self.code,
        }


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
