"""Peak memory of a block of code on the CPU: the most memory it held at once, MiB above its start.

With glibc (Linux) the measure is the allocator's own count of bytes in use (``mallinfo2``: heap
chunks handed out plus memory-mapped blocks), which numpy, torch's CPU tensors and ITK all draw
from. A background thread samples it every ``interval_s``; a spike shorter than that can be
missed, so the value is a lower bound. Memory that a long-lived process (the app, a notebook)
freed earlier and reuses counts as needed again; the resident set size would not rise then and
a second identical run would read ~0.

Without ``mallinfo2`` (macOS, musl, glibc < 2.33) the resident set size is sampled instead
(``/proc/self/statm`` where present), together with the process record (``ru_maxrss``) when the
block set a new one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import sys
import threading
from collections.abc import Callable

SAMPLE_INTERVAL_S = 0.01


class _Mallinfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h), every field a ``size_t`` in bytes."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _mallinfo2() -> Callable[[], _Mallinfo2] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        call = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    call.restype = _Mallinfo2
    return call


def allocated_mib() -> float | None:
    """Bytes the C allocator has handed out and not yet freed, MiB; None without ``mallinfo2``."""
    call = _mallinfo2()
    if call is None:
        return None
    info = call()
    return (info.uordblks + info.hblkhd) / 2**20


def resident_mib() -> float:
    """The process's resident set size now, MiB (0 where ``/proc/self/statm`` is absent)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def process_peak_mib() -> float:
    """The process's largest resident set size so far, MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


class MemoryPeak:
    """``with MemoryPeak() as p: ...`` then ``p.peak_mib``: most memory held inside the block minus that at its start.

    ``p.measure`` names what was counted: ``"allocated"`` (glibc's bytes in use) or ``"resident"`` (RSS).
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S, measure: str | None = None):
        """``measure``: None = ``"allocated"`` where glibc offers it, else ``"resident"``."""
        if measure not in (None, "allocated", "resident"):
            raise ValueError(f"MemoryPeak measure must be 'allocated' or 'resident', got {measure!r}")
        if measure == "allocated" and _mallinfo2() is None:
            raise ValueError("MemoryPeak measure 'allocated' needs glibc's mallinfo2, absent here")
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self.measure = measure or ("allocated" if _mallinfo2() is not None else "resident")

    def _now(self) -> float:
        allocated = allocated_mib() if self.measure == "allocated" else None
        return resident_mib() if allocated is None else allocated

    def __enter__(self) -> MemoryPeak:
        self._start = self._now()
        self._record_before = process_peak_mib()
        self._largest = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="memory-peak", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._largest = max(self._largest, self._now())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        largest = max(self._largest, self._now())
        if self.measure == "resident":
            record = process_peak_mib()
            if record > self._record_before:  # the block set a new process record: that is its exact peak
                largest = max(largest, record)
        self.peak_mib = max(largest - self._start, 0.0)
