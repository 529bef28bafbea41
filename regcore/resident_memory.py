"""Peak resident memory (RSS) of a block of code, in MiB above the RSS at its start.

The process-wide peak (``getrusage`` ``ru_maxrss``) only answers for a block that sets a new
record; in a long-lived process (the Streamlit app, a notebook) an earlier, larger run already
holds the record and a later run would read 0. :class:`ResidentPeak` therefore also samples
``/proc/self/statm`` from a background thread every ``interval_s`` and keeps the larger of the
two. A spike shorter than the interval between samples can be missed when it is not a new
process record; the value is a lower bound then. Where ``/proc`` is absent (macOS, Windows) only
the process record is used.
"""

from __future__ import annotations

import os
import resource
import threading

SAMPLE_INTERVAL_S = 0.01


def resident_mib() -> float:
    """The process's resident set size now, MiB (0 where ``/proc/self/statm`` is absent)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def process_peak_mib() -> float:
    """The process's largest RSS so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class ResidentPeak:
    """``with ResidentPeak() as p: ...`` then ``p.peak_mib``: largest RSS inside the block minus RSS at its start."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S):
        self.interval_s = interval_s
        self.peak_mib = 0.0

    def __enter__(self) -> ResidentPeak:
        self._start = resident_mib()
        self._record_before = process_peak_mib()
        self._sampled = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="resident-peak", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sampled = max(self._sampled, resident_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        largest = max(self._sampled, resident_mib())
        record = process_peak_mib()
        if record > self._record_before:  # the block set a new process record: that is its exact peak
            largest = max(largest, record)
        self.peak_mib = max(largest - self._start, 0.0)
