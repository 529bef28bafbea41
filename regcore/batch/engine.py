"""Batch engines: ``serial`` (this process, one task after another) and ``ray`` (one Ray task each).

    >>> from regcore.batch import Task, run_tasks
    >>> records = run_tasks(tasks, "out/", engine="ray")               # embedded local Ray
    >>> records = run_tasks(tasks, "out/", engine="ray", address="auto")  # join a running cluster

Both run :func:`regcore.batch.tasks.execute_task`, so they give the same metrics. The driver (this
process) writes each result to ``OUT/tasks/<key>.json`` as soon as it arrives (the worker also
writes it when it can reach ``OUT``), so a rerun skips finished tasks and a crash loses at most the
tasks in flight.

Ray: without ``address`` an embedded local Ray starts on this machine (``num_cpus`` workers, default
all cores) and stops at the end; with ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:10001``) the
batch joins that cluster. Each task asks for 1 CPU and runs torch/numba with ``threads`` (default 1)
threads. A task whose worker process dies (killed, out of memory, node lost) is retried by Ray
(``max_retries``, default 3); errors raised by the registration itself are caught inside the task and
recorded, so they are never retried. Ray is imported only when the Ray engine is used.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from regcore.batch.progress import STOP_FILE, BatchProgress, stop_requested
from regcore.batch.records import OK, done_records, failure_record, write_json_atomic
from regcore.batch.tasks import Task, execute_task

ENGINES = ("serial", "ray")
TASK_LIST = "tasks.json"
MAX_RETRIES = 3
Stop = Callable[[], bool]

__all__ = ["ENGINES", "KeptOpen", "RayEngine", "SerialEngine", "make_engine", "run_tasks"]


class SerialEngine:
    """One task after another in this process (torch's default threads)."""

    name = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def start(self) -> None:
        pass

    def run(
        self, tasks: Sequence[Task], out_dir: str | None, should_stop: Stop, submitted: Callable[[int], None]
    ) -> Iterator[tuple[Task, dict]]:
        for task in tasks:
            if should_stop():
                return
            submitted(1)
            yield task, execute_task(task, out_dir, threads=self.threads)

    def close(self) -> None:
        pass


def _ray_execute(task: Task, out_dir: str | None, threads: int | None) -> dict:
    """The body of a Ray task (module-level, so workers import it by name)."""
    return execute_task(task, out_dir, threads=threads)


_REMOTES: dict[int, Any] = {}


def _remote(max_retries: int):
    import ray

    if max_retries not in _REMOTES:
        _REMOTES[max_retries] = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(
            _ray_execute
        )
    return _REMOTES[max_retries]


class RayEngine:
    """Ray tasks on an embedded local Ray (``address=None``) or an existing cluster (``address``).

    Args:
        address: ``None`` (start a local Ray here), ``"auto"`` (the cluster started on this machine
            with ``ray start --head``), ``"HOST:PORT"`` or ``"ray://HOST:10001"``.
        num_cpus: CPUs of the embedded Ray (default: all cores); ignored with ``address``.
        threads: torch/numba threads per task (default 1: one task per CPU).
        max_retries: how often Ray reruns a task whose worker process died.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        threads: int | None = 1,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
            raise ValueError(f"num_cpus must be a positive integer, got {num_cpus!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.address, self.num_cpus, self.threads, self.max_retries = address, num_cpus, threads, max_retries
        self._owned = False

    def start(self) -> None:
        if self.address:
            _use_token_if_available()  # before ray reads its config
        try:
            import ray
        except ImportError as e:  # pragma: no cover - ray is a dependency
            raise ImportError(f"the ray engine needs the 'ray' package (pip install ray): {e}") from None
        if ray.is_initialized():
            return
        env = {k: os.environ[k] for k in ("REGCORE_PLUGINS", "REGCORE_WARP_BACKEND") if os.environ.get(k)}
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
            "configure_logging": True,
        }
        if env:
            kwargs["runtime_env"] = {"env_vars": env}
        if self.address:
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RuntimeError(
                    f"cannot join the Ray cluster at --address {self.address!r}: "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; start one with "
                    "`ray start --head` or leave --address out for a local Ray"
                ) from None
        else:
            ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, **kwargs)
        self._owned = True

    def run(
        self, tasks: Sequence[Task], out_dir: str | None, should_stop: Stop, submitted: Callable[[int], None]
    ) -> Iterator[tuple[Task, dict]]:
        import ray

        remote = _remote(self.max_retries)
        by_ref = {remote.remote(t, out_dir, self.threads): t for t in tasks}
        submitted(len(by_ref))
        pending = list(by_ref)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                task = by_ref[ref]
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as e:
                    first = (str(e).strip().splitlines() or [""])[0][:300]
                    if isinstance(
                        e, ray.exceptions.RayTaskError
                    ):  # raised past execute_task (not an Exception)
                        record = failure_record(task, f"{type(e).__name__}: {first}")
                    else:  # the worker died more than max_retries times
                        record = failure_record(
                            task,
                            f"{type(e).__name__}: the worker running this task died "
                            f"{self.max_retries + 1} times ({first})",
                        )
                yield task, record
            if pending and should_stop():
                for ref in pending:
                    ray.cancel(ref, force=True)
                return

    def close(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False


def _use_token_if_available() -> None:
    """Ray >= 2.5x clusters started by `ray start` use token authentication when a token exists
    (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``), but a driver joining by address only
    sends it with ``RAY_AUTH_MODE=token``. Send it whenever one is available (clusters without
    authentication accept it too); an explicit ``RAY_AUTH_MODE`` is respected."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:  # already imported (e.g. by the app): refresh Ray's cached config
            try:
                from ray._raylet import Config  # type: ignore[attr-defined]

                Config.initialize("")
            except Exception:  # noqa: BLE001, S110 - private API; joining then fails with Ray's own message
                pass


class KeptOpen:
    """An engine for several :func:`run_tasks` calls in a row: started on the first, its ``close`` after each call
    does nothing, and :meth:`shutdown` ends it once (e.g. Ray stays up between the passes of an atlas build)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.name = getattr(engine, "name", "engine")
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.engine.start()
            self.started = True

    def run(self, *args, **kwargs):
        return self.engine.run(*args, **kwargs)

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        if self.started:
            self.engine.close()


def make_engine(
    engine: str | Any = "serial",
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
):
    """An engine object from a name (``serial`` or ``ray``); an engine object passes through."""
    if not isinstance(engine, str):
        if not all(hasattr(engine, a) for a in ("start", "run", "close")):
            raise TypeError(
                f"engine must be one of {ENGINES} or an engine object, got {type(engine).__name__}"
            )
        return engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "serial":
        if address:
            raise ValueError("--address needs --engine ray")
        return SerialEngine(threads=threads)
    return RayEngine(address=address, num_cpus=num_cpus, threads=1 if threads is None else threads)


def run_tasks(
    tasks: Sequence[Task],
    out_dir: str | os.PathLike | None = None,
    *,
    engine: str | Any = "serial",
    address: str | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    retry_failed: bool = False,
    fresh: bool = False,
    bar: bool = False,
    callback: Callable[[dict], None] | None = None,
    on_record: Callable[[Task, dict], None] | None = None,
) -> list[dict]:
    """Run every task on ``engine`` and return their result records, in the order of ``tasks``.

    Tasks whose result is already in ``out_dir`` are skipped (failed ones rerun with ``retry_failed``; every one
    with ``fresh``).
    ``bar`` shows a progress bar on stderr; ``callback`` gets the status dict after each change;
    ``on_record`` gets each new ``(task, record)`` as it arrives. A ``STOP`` file in ``out_dir`` stops
    the batch (state "stopped"; the records returned so far are complete, the rest are missing).
    """
    tasks = list(tasks)
    if not all(isinstance(t, Task) for t in tasks):
        raise TypeError("tasks must be regcore.batch.Task objects")
    out = None
    if out_dir is not None:
        out = Path(out_dir).resolve()
        out.mkdir(parents=True, exist_ok=True)
        (out / STOP_FILE).unlink(missing_ok=True)
    eng = make_engine(engine, address=address, num_cpus=num_cpus, threads=threads)
    unique = list({t.key: t for t in tasks}.values())
    records = {} if fresh else done_records(out, unique, retry_failed=retry_failed)
    if out is not None:  # the task list, so the app can show what waits
        write_json_atomic(out / TASK_LIST, [t.describe() for t in unique])
    todo = [t for t in unique if t.key not in records]
    progress = BatchProgress(
        len(unique),
        skipped=len(records),
        out_dir=out,
        engine=eng.name,
        bar=bar,
        failed_before=sum(r.get("status") != OK for r in records.values()),
        callback=callback,
    )
    state, message = "finished", ""
    try:
        if todo:
            eng.start()
            for task, record in eng.run(
                todo, str(out) if out else None, lambda: stop_requested(out), progress.submitted
            ):
                records[task.key] = record
                if out is not None:
                    write_json_atomic(out / "tasks" / f"{task.key}.json", record)
                progress.finished(record)
                if on_record is not None:
                    on_record(task, record)
        if len(records) < len(unique):
            state, message = (
                "stopped",
                f"stopped: {len(records)} of {len(unique)} tasks done; run again to continue",
            )
    except KeyboardInterrupt:
        state, message = "stopped", "interrupted; run again to continue"
        raise
    except BaseException as e:
        state, message = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        try:
            eng.close()
        finally:
            progress.close(state, message)
            if out is not None:
                (out / STOP_FILE).unlink(missing_ok=True)
    return [records[t.key] for t in tasks if t.key in records]
