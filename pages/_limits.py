"""Budgets that keep one server usable by many visitors (a class of thirty, a shared workstation).

* Uploads: at most ``REGLAB_MAX_UPLOAD_MB`` MiB per file (default 256; Streamlit's own cap is
  ``server.maxUploadSize`` in ``.streamlit/config.toml``) and at most ``REGLAB_MAX_UPLOAD_VOXELS``
  voxels per decoded image (default 64 Mi, e.g. 400 x 400 x 400), checked from the header BEFORE
  anything is decoded.
* Registrations: at most ``REGLAB_MAX_CONCURRENT_RUNS`` run at once on the server (default: the CPU
  count, at least 1); others wait their turn in a queue of at most ``REGLAB_MAX_QUEUED_RUNS`` (default
  32). A browser session has at most ``REGLAB_MAX_RUNS_PER_SESSION`` registrations running or queued
  (default 1) and a client address at most ``REGLAB_MAX_RUNS_PER_IP`` (default 16: a class behind one
  NAT shares an address), so one visitor cannot queue a hundred 3D runs, not even by opening tabs.
* Training: at most ``REGLAB_MAX_TRAINING_RUNS`` training runs active on the server (default 4) and
  ``REGLAB_MAX_TRAINING_PER_VISITOR`` per browser session (default 2); only the session that started
  a run may stop it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st


def _int_env(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def max_upload_bytes() -> int:
    return _int_env("REGLAB_MAX_UPLOAD_MB", 256) * 1024**2


def max_upload_voxels() -> int:
    return _int_env("REGLAB_MAX_UPLOAD_VOXELS", 64 * 1024**2)


def max_concurrent_runs() -> int:
    return _int_env("REGLAB_MAX_CONCURRENT_RUNS", os.cpu_count() or 1)


def max_queued_runs() -> int:
    return _int_env("REGLAB_MAX_QUEUED_RUNS", 32)


def max_runs(key: str) -> int:
    """Registrations one key may have running or queued: a session (``session:...``) or an address (``ip:...``)."""
    if key.startswith("ip:"):
        return _int_env("REGLAB_MAX_RUNS_PER_IP", 16)
    return _int_env("REGLAB_MAX_RUNS_PER_SESSION", 1)


def max_training_runs() -> int:
    return _int_env("REGLAB_MAX_TRAINING_RUNS", 4)


def max_training_per_visitor() -> int:
    return _int_env("REGLAB_MAX_TRAINING_PER_VISITOR", 2)


def session_id() -> str:
    """This browser session's id: a random token kept in its own session state (stable across reruns)."""
    return str(st.session_state.setdefault("_reglab_session", os.urandom(8).hex()))


def visitor() -> str:
    """The browser session the per-visitor limits count against."""
    return f"session:{session_id()}"


def client_keys() -> tuple[str, ...]:
    """Every key a registration counts against: this session, and its client address when known."""
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - older Streamlit or no request context (AppTest)
        ip = None
    return (visitor(), f"ip:{ip}") if ip else (visitor(),)


class ServerBusy(RuntimeError):
    """The server refuses a run now (shown on the page as one line)."""


class RunQueue:
    """A FIFO of registrations: ``max_running`` at once, ``max_queued`` waiting, ``per_visitor`` each."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []
        self._per_visitor: dict[str, int] = {}

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {"running": self._running, "waiting": len(self._waiting)}

    @contextmanager
    def slot(
        self,
        who: str | tuple[str, ...],
        on_wait: Callable[[int], None] | None = None,
        timeout_s: float = 1800.0,
    ) -> Iterator[None]:
        """Hold one run slot for the block; ``who``: the keys it counts against (see :func:`client_keys`);
        ``on_wait(position)`` is called while queued."""
        keys = (who,) if isinstance(who, str) else tuple(who)
        ticket = object()
        with self._cond:
            for key in keys:
                if self._per_visitor.get(key, 0) >= max_runs(key):
                    what = "from your address" if key.startswith("ip:") else "in this browser session"
                    raise ServerBusy(
                        f"{self._per_visitor[key]} registration(s) {what} are already running or "
                        f"queued (limit {max_runs(key)}); wait for them to finish"
                    )
            if self._running >= max_concurrent_runs() and len(self._waiting) >= max_queued_runs():
                raise ServerBusy(
                    f"the server is busy ({self._running} registrations running, {len(self._waiting)} "
                    "waiting); try again in a few minutes"
                )
            for key in keys:
                self._per_visitor[key] = self._per_visitor.get(key, 0) + 1
            self._waiting.append(ticket)
        acquired = False
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                with self._cond:
                    if self._waiting[0] is ticket and self._running < max_concurrent_runs():
                        self._waiting.pop(0)
                        self._running += 1
                        acquired = True
                        break
                    position = self._waiting.index(ticket)
                    if time.monotonic() > deadline:
                        raise ServerBusy("waited too long for a free slot; try again later")
                    self._cond.wait(0.5)
                if on_wait is not None:
                    on_wait(position)  # may raise (the visitor navigated away): the finally cleans up
            yield
        finally:
            with self._cond:
                if acquired:
                    self._running -= 1
                elif ticket in self._waiting:
                    self._waiting.remove(ticket)
                for key in keys:
                    self._per_visitor[key] -= 1
                    if not self._per_visitor[key]:
                        del self._per_visitor[key]
                self._cond.notify_all()


RUNS = RunQueue()
"""The one registration queue of this server process."""

_TRAINING_OWNERS: dict[str, set[str]] = {}
_TRAINING_LOCK = threading.Lock()


def training_owned(who: str) -> set[str]:
    """Run ids of training runs started by ``who`` in this server process."""
    with _TRAINING_LOCK:
        return set(_TRAINING_OWNERS.get(who, set()))


@contextmanager
def training_start(who: str, active: Callable[[], list[str]]) -> Iterator[Callable[[str], None]]:
    """Check the training budgets, then let the block start a run and record it with the yielded callable.

    ``active()`` lists the run ids that are queued or running now (all visitors).
    """
    with _TRAINING_LOCK:
        now = set(active())
        mine = _TRAINING_OWNERS.get(who, set()) & now
        if len(mine) >= max_training_per_visitor():
            raise ServerBusy(
                f"you already have {len(mine)} training run(s) active (limit "
                f"{max_training_per_visitor()} per visitor); stop one or wait for it to finish"
            )
        if len(now) >= max_training_runs():
            raise ServerBusy(
                f"{len(now)} training runs are active on this server (limit {max_training_runs()}); "
                "try again when one finishes"
            )

        def record(run_id: str) -> None:
            _TRAINING_OWNERS.setdefault(who, set()).add(run_id)

        yield record
