"""Background training runs: start, stop, resume, status, list - all state on disk.

A run is a folder ``<runs dir>/<run_id>/`` (runs dir = env ``REGLAB_RUNS_DIR``, default
``./runs``). :func:`start` writes ``config.json`` and launches ``python -m regcore.train.worker``
as its own process (new session), so a run survives a browser refresh and an app restart;
the UI only keeps run ids. Stop = a ``STOP`` file the loop checks every step.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from regcore.train.status import STOP_FILE, read_metrics, read_status, write_status

_PROCS: dict[str, subprocess.Popen] = {}  # children of this process (reaped on status())


def runs_dir() -> Path:
    """The runs folder (env ``REGLAB_RUNS_DIR``, default ``./runs``), created on demand."""
    d = Path(os.environ.get("REGLAB_RUNS_DIR", "runs"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_path(run_id: str) -> Path:
    """Folder of an existing run; ValueError for an unknown or malformed id."""
    if not isinstance(run_id, str) or not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise ValueError(f"run_id must be a plain folder name, got {run_id!r}")
    p = runs_dir() / run_id
    if not (p / "config.json").is_file():
        raise ValueError(f"unknown run {run_id!r} (no {p / 'config.json'})")
    return p


def _as_config(config: Any):
    from regcore.train.config import TrainConfig, config_from_dict, load_config

    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    if isinstance(config, (str, Path)):
        return load_config(config)
    raise TypeError(f"config must be a TrainConfig, dict or path, got {type(config).__name__}")


def _launch(run_id: str, resume: bool) -> None:
    p = runs_dir() / run_id
    cmd = [sys.executable, "-m", "regcore.train.worker", str(p)] + (["--resume"] if resume else [])
    # The worker imports what this process can import (plug-in families defined outside regcore too).
    paths = [str(Path(__file__).resolve().parents[2])] + [p for p in sys.path if p and Path(p).is_dir()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    log = open(p / "worker.log", "a", encoding="utf-8")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    log.close()
    _PROCS[run_id] = proc
    write_status(p, state="queued", pid=proc.pid, message="starting worker" + (" (resume)" if resume else ""))


def start(config: Any, run_id: str | None = None, pair: Any = None) -> str:
    """Validate ``config`` (TrainConfig, dict or recipe path), create the run folder, launch the worker.

    With ``pair`` (a ``regcore.data.Pair``) the run trains on that pair instead of ``config.data``:
    it is written to ``<run>/pair/`` (:mod:`regcore.train.pair_folder`) and the saved recipe reads
    it as ``data = folder``. Returns the run id (``YYYYmmdd-HHMMSS-<family><dims>d-<hex>`` unless given).
    """
    from dataclasses import replace

    from regcore.train.config import DataSource, save_config
    from regcore.train.pair_folder import write_pair_folder

    cfg = _as_config(config)
    if pair is not None and pair.fixed.ndim != cfg.dims:
        raise ValueError(f"the pair is {pair.fixed.ndim}D but TrainConfig.dims = {cfg.dims}")
    run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.family}{cfg.dims}d-{secrets.token_hex(2)}"
    p = runs_dir() / run_id
    if p.exists():
        raise ValueError(f"run {run_id!r} already exists in {runs_dir()}")
    p.mkdir(parents=True)
    if pair is not None:
        try:
            manifest = write_pair_folder(pair, p / "pair")
        except Exception:
            shutil.rmtree(p, ignore_errors=True)  # no half-made run folder left behind
            raise
        cfg = replace(cfg, data=DataSource.FOLDER, data_path=str(manifest.resolve()))
    save_config(cfg, p / "config.json")
    _launch(run_id, resume=False)
    return run_id


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    try:  # a zombie (exited, not yet reaped) counts as dead
        if Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").split(")")[-1].split()[0] == "Z":
            return False
        # after an app or machine restart the pid may belong to another program: it must be regcore
        return b"regcore" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def status(run_id: str) -> dict[str, Any]:
    """The run's status dict (state, epoch, step, total_steps, message, pid, updated, run_id).

    A run whose worker died without saying so (killed, machine restart) reads as "failed".
    """
    p = run_path(run_id)
    proc = _PROCS.get(run_id)
    started_here = proc is not None and proc.poll() is None  # our child, alive (maybe not yet exec'd)
    if proc is not None and not started_here:
        _PROCS.pop(run_id, None)
    st = read_status(p) or {"state": "queued", "message": "no status yet"}
    if st.get("state") in ("queued", "running") and not started_here and not _alive(st.get("pid")):
        st = read_status(p) or st  # the worker may have just finished
        if st.get("state") in ("queued", "running"):
            st = write_status(
                p,
                state="failed",
                pid=st.get("pid"),
                message="the training process ended unexpectedly; see worker.log, then resume",
            )
    return {**st, "run_id": run_id}


def stop(run_id: str) -> None:
    """Ask a run to stop (it checkpoints and exits within one step)."""
    p = run_path(run_id)
    (p / STOP_FILE).touch()


def resume(run_id: str) -> None:
    """Continue a stopped/failed run from its last checkpoint in a new worker process."""
    p = run_path(run_id)
    st = status(run_id)
    if st.get("state") in ("queued", "running"):
        raise ValueError(f"run {run_id!r} is already {st['state']}")
    if not (p / "checkpoints" / "last.pt").is_file():
        raise ValueError(f"run {run_id!r} has no checkpoint to resume from; start it again instead")
    _launch(run_id, resume=True)


def list_runs() -> list[dict[str, Any]]:
    """Status of every run in the runs folder, newest first (each dict has ``run_id`` and ``config``)."""
    out = []
    for p in sorted(runs_dir().iterdir(), reverse=True):
        if (p / "config.json").is_file():
            try:
                cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cfg = {}
            out.append({**status(p.name), "config": cfg if isinstance(cfg, dict) else {}})
    return out


def metrics(run_id: str) -> list[dict[str, Any]]:
    """All metric records of a run (see :mod:`regcore.train.loop`)."""
    return read_metrics(run_path(run_id))


def previews(run_id: str) -> list[Path]:
    """Per-epoch preview PNGs, oldest first."""
    return sorted((run_path(run_id) / "previews").glob("epoch_*.png"))


def weights_path(run_id: str) -> Path | None:
    """Final weights (``model.pt``) if finished, else the last checkpoint, else None."""
    p = run_path(run_id)
    for cand in (p / "model.pt", p / "checkpoints" / "last.pt"):
        if cand.is_file():
            return cand
    return None
