"""Background batch runs (for the app): start, status, tasks, logs, stop, resume, list; all state on disk.

A batch is a folder ``<batches dir>/<id>/`` (env ``REGLAB_BATCH_DIR``, default ``runs/batches``).
:func:`start` writes ``job.json`` (manifest, methods, overrides, grid, engine) and launches
``python -m regcore.batch.jobs <folder>`` as its own process (new session), which runs
:func:`regcore.bench.run_benchmark` into the folder: ``status.json`` (counts, ETA), ``tasks.json``
(every task), ``tasks/<key>.json|.start|.log`` (result, attempts, live log) and, at the end,
``results.json``/``results.md`` (+ ``sweep.md``, ``pareto.html``, ``pareto.png`` for a grid). The page
keeps only the batch id, so a browser refresh or an app restart loses nothing. Stop = a ``STOP``
file; resume = start the worker again (finished tasks are skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from regcore.batch.progress import STOP_FILE, read_status, write_status

JOB_FILE = "job.json"
ACTIVE = ("queued", "running")


def batches_dir() -> Path:
    d = Path(os.environ.get("REGLAB_BATCH_DIR", Path("runs") / "batches"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def batch_path(batch_id: str) -> Path:
    if (
        not isinstance(batch_id, str)
        or not batch_id
        or "/" in batch_id
        or "\\" in batch_id
        or batch_id.startswith(".")
    ):
        raise ValueError(f"batch_id must be a plain folder name, got {batch_id!r}")
    p = batches_dir() / batch_id
    if not (p / JOB_FILE).is_file():
        raise ValueError(f"unknown batch {batch_id!r} (no {p / JOB_FILE})")
    return p


def start(
    manifest: str | os.PathLike,
    methods: list[str],
    *,
    overrides: dict | None = None,
    grid: list[str] | dict | None = None,
    engine: str = "serial",
    address: str | None = None,
    num_cpus: int | None = None,
    device: str = "auto",
    batch_id: str | None = None,
) -> str:
    """Validate the request (unknown method, bad parameter or grid -> ValueError) and launch the batch."""
    from regcore.batch.engine import ENGINES
    from regcore.batch.manifest import manifest_refs
    from regcore.batch.sweep import expand, parse_grid
    from regcore.methods.registry import get

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    methods = [m for m in methods if m and m != "identity"]
    if not methods:
        raise ValueError("choose at least one method")
    for m in methods:
        get(m)
    grid_map = parse_grid(grid, methods) if isinstance(grid, list) else dict(grid or {})
    expand(methods, grid_map, overrides or {})
    refs, errors = manifest_refs(manifest)
    if not refs:
        raise ValueError(f"{manifest}: no usable pairs ({'; '.join(errors) or 'empty manifest'})")
    batch_id = batch_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    p = batches_dir() / batch_id
    if p.exists():
        raise ValueError(f"batch {batch_id!r} already exists in {batches_dir()}")
    p.mkdir(parents=True)
    job = {
        "manifest": str(Path(manifest).resolve()),
        "methods": methods,
        "overrides": overrides or {},
        "grid": grid_map,
        "engine": engine,
        "address": address or None,
        "num_cpus": num_cpus,
        "device": device,
        "pairs": len(refs),
        "created": time.time(),
    }
    (p / JOB_FILE).write_text(json.dumps(job, indent=2), encoding="utf-8")
    _launch(p)
    return batch_id


def _launch(p: Path) -> None:
    cmd = [sys.executable, "-m", "regcore.batch.jobs", str(p.resolve())]
    paths = [str(Path(__file__).resolve().parents[2])] + [x for x in sys.path if x and Path(x).is_dir()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    (p / STOP_FILE).unlink(missing_ok=True)
    with open(p / "worker.log", "a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    write_status(p, state="queued", pid=proc.pid, message="starting")


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, OverflowError, ValueError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def status(batch_id: str) -> dict[str, Any]:
    """``status.json`` plus ``running`` (tasks a worker has started and not finished) and the job; a batch
    whose driver died without saying so reads as "failed"."""
    p = batch_path(batch_id)
    st = read_status(p) or {"state": "queued", "message": "no status yet"}
    if st.get("state") in ACTIVE and not _alive(st.get("pid")):
        st = read_status(p) or st
        if st.get("state") in ACTIVE:
            st = write_status(
                p,
                state="failed",
                message="the batch process ended unexpectedly; see worker.log, "
                "then resume (finished tasks are kept)",
            )
    rows = tasks(batch_id)
    st["running"] = sum(r["state"] == "running" for r in rows)
    return {**st, "batch_id": batch_id, "job": json.loads((p / JOB_FILE).read_text(encoding="utf-8"))}


def tasks(batch_id: str) -> list[dict[str, Any]]:
    """One row per task: label, pair, state (waiting / running / ok / failed), attempts, wall time, error."""
    from regcore.batch.engine import TASK_LIST
    from regcore.batch.records import TASKS_DIR, read_result

    p = batch_path(batch_id)
    try:
        listed = json.loads((p / TASK_LIST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    st = read_status(p) or {}
    active = st.get("state") in ACTIVE and _alive(st.get("pid"))
    rows = []
    for t in listed:
        rec = read_result(p / TASKS_DIR / f"{t['key']}.json")
        start_file = p / TASKS_DIR / f"{t['key']}.start"
        attempts = len(start_file.read_text(encoding="utf-8").splitlines()) if start_file.is_file() else 0
        state = rec["status"] if rec else ("running" if attempts and active else "waiting")
        rows.append(
            {
                "key": t["key"],
                "variant": t["label"],
                "pair": t["pair"],
                "state": state,
                "attempts": attempts,
                "wall_s": rec.get("wall_s") if rec else None,
                "dice_mean": rec.get("dice_mean") if rec else None,
                "error": rec.get("error", "") if rec else "",
            }
        )
    return rows


def task_log(batch_id: str, key: str) -> str:
    from regcore.batch.records import TASKS_DIR

    f = batch_path(batch_id) / TASKS_DIR / f"{key}.log"
    return f.read_text(encoding="utf-8") if f.is_file() else ""


def report(batch_id: str) -> dict | None:
    """``results.json`` once the batch has finished, else None."""
    f = batch_path(batch_id) / "results.json"
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def stop(batch_id: str) -> None:
    (batch_path(batch_id) / STOP_FILE).touch()


def resume(batch_id: str) -> None:
    """Start the batch again: finished tasks are skipped, the rest run."""
    p = batch_path(batch_id)
    if status(batch_id).get("state") in ACTIVE:
        raise ValueError(f"batch {batch_id!r} is still running")
    _launch(p)


def list_batches() -> list[dict[str, Any]]:
    out = []
    for p in sorted(batches_dir().iterdir(), reverse=True):
        if (p / JOB_FILE).is_file():
            try:
                out.append(status(p.name))
            except (OSError, ValueError, json.JSONDecodeError):
                continue
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regcore.batch.jobs", description="run one background batch"
    )
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    job = json.loads((args.folder / JOB_FILE).read_text(encoding="utf-8"))
    from regcore.bench import run_benchmark

    try:
        run_benchmark(
            job["manifest"],
            job["methods"],
            overrides=job.get("overrides"),
            out_dir=args.folder,
            device=job.get("device", "auto"),
            engine=job.get("engine", "serial"),
            address=job.get("address"),
            num_cpus=job.get("num_cpus"),
            grid=job.get("grid") or None,
            log=lambda s: print(s, flush=True),
            command=f"batch job {args.folder.name}",
        )
    except Exception as e:  # noqa: BLE001 - recorded for the page
        traceback.print_exc()
        write_status(args.folder, state="failed", message=f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
