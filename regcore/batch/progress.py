"""Progress of a batch: counts, ETA, ``status.json`` on disk (for the app) and a CLI progress bar.

``status.json`` in the batch folder is rewritten atomically on every change::

    {"state": "running" | "finished" | "stopped" | "failed", "engine", "total", "skipped", "done",
     "failed", "in_flight", "eta_s", "elapsed_s", "message", "pid", "updated"}

``done`` counts every finished task (skipped ones included), ``failed`` those recorded as failed.
Stop: create ``STOP`` in the batch folder; the engine stops submitting, cancels what waits and
records state "stopped" (a rerun continues where it stopped).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
STOP_FILE = "STOP"
STATES = ("queued", "running", "finished", "stopped", "failed")


def read_status(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(out_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_status(out_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``status.json`` (atomic rewrite)."""
    from regcore.batch.records import write_json_atomic

    status = {**(read_status(out_dir) or {}), **fields, "updated": time.time()}
    if status.get("state") not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {status.get('state')!r}")
    write_json_atomic(Path(out_dir) / STATUS_FILE, status)
    return status


def stop_requested(out_dir: str | os.PathLike | None) -> bool:
    return out_dir is not None and (Path(out_dir) / STOP_FILE).exists()


class BatchProgress:
    """Counts finished / failed / in-flight tasks, estimates the time left, reports to disk and a bar.

    Args:
        total: number of tasks in the batch (skipped ones included).
        skipped: tasks already done before this run (results on disk).
        out_dir: batch folder for ``status.json`` (None: no file).
        engine: engine name for the status.
        bar: show a tqdm progress bar on stderr (falls back to one line per task without tqdm).
        callback: called with the status dict after each change.
    """

    def __init__(
        self,
        total: int,
        *,
        skipped: int = 0,
        failed_before: int = 0,
        out_dir=None,
        engine: str = "",
        bar: bool = False,
        callback: Callable[[dict], None] | None = None,
    ) -> None:
        self.total, self.skipped = int(total), int(skipped)
        self.done, self.failed, self.in_flight = int(skipped), int(failed_before), 0
        self.out_dir, self.engine, self.callback = out_dir, engine, callback
        self.t0 = time.time()
        self._bar = None
        self._plain = False
        if bar:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=self.total,
                    initial=self.done,
                    unit="task",
                    desc=f"regcore [{engine}]",
                    file=sys.stderr,
                    dynamic_ncols=True,
                    smoothing=0.1,
                )
                self._bar.set_postfix(failed=self.failed, refresh=False)
            except ImportError:
                self._plain = True
        self._report("running", f"{self.skipped} of {self.total} tasks already done")

    @property
    def eta_s(self) -> float | None:
        new = self.done - self.skipped
        if new <= 0:
            return None
        return (time.time() - self.t0) / new * (self.total - self.done)

    def snapshot(self, state: str = "running", message: str = "") -> dict[str, Any]:
        return {
            "state": state,
            "engine": self.engine,
            "total": self.total,
            "skipped": self.skipped,
            "done": self.done,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "eta_s": self.eta_s,
            "elapsed_s": time.time() - self.t0,
            "message": message,
            "pid": os.getpid(),
        }

    def _report(self, state: str, message: str = "") -> dict[str, Any]:
        snap = self.snapshot(state, message)
        if self.out_dir is not None:
            write_status(self.out_dir, **snap)
        if self.callback is not None:
            self.callback(snap)
        return snap

    def submitted(self, n: int = 1) -> None:
        self.in_flight += n
        self._report("running", f"{self.in_flight} task(s) in flight")

    def finished(self, record: dict[str, Any]) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.done += 1
        failed = record.get("status") != "ok"
        self.failed += failed
        what = f"{record.get('label', '?')} on {record.get('pair', '?')}"
        msg = f"{what}: failed ({record.get('error', '')[:120]})" if failed else f"{what}: done"
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=self.failed, refresh=False)
            if failed:
                self._bar.write(f"  failed: {what}: {record.get('error', '')[:200]}", file=sys.stderr)
        elif self._plain:
            eta = self.eta_s
            print(
                f"[{self.done}/{self.total}] {msg}" + (f" (ETA {eta:.0f} s)" if eta else ""), file=sys.stderr
            )
        self._report("running", msg)

    def close(self, state: str = "finished", message: str = "") -> dict[str, Any]:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return self._report(
            state, message or f"{self.done - self.failed} ok, {self.failed} failed of {self.total}"
        )
