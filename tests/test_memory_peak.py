"""MemoryPeak / Timer: the memory a block held at once, not the process's earlier record and not 0."""

import subprocess
import sys
import time

import pytest
import torch

from regcore.memory_peak import MemoryPeak, allocated_mib
from regcore.methods.base import Timer

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc / /proc/self/statm")


def hold(mib: int, seconds: float = 0.1) -> None:
    """Allocate and touch ``mib`` MiB for ``seconds``; freed on return."""
    block = torch.ones(mib * 2**18)
    time.sleep(seconds)
    del block


@linux_only
def test_allocated_counts_memory_the_process_reuses():
    """A second identical block reads the same: freed memory the heap hands out again counts (RSS would not rise)."""
    readings = []
    for _ in range(2):
        with Timer(torch.device("cpu")) as t:
            hold(12)  # below glibc's mmap threshold: served from the heap, kept resident after the free
        readings.append(t.peak_memory_mb)
    assert all(10 < r < 20 for r in readings), readings


@linux_only
def test_allocated_ignores_what_was_held_before_the_block():
    base = allocated_mib()
    keep = torch.ones(50 * 2**18)
    with MemoryPeak() as p:
        hold(30)
    del keep
    assert base is not None and 25 < p.peak_mib < 45, p.peak_mib


def test_an_unknown_measure_is_refused():
    with pytest.raises(ValueError, match="measure"):
        MemoryPeak(measure="virtual")


RESIDENT_PROBE = """
import sys
import time

import torch

from regcore.heap import return_large_frees
from regcore.memory_peak import MemoryPeak


def hold(mib, seconds=0.1):
    block = torch.ones(mib * 2**18)
    time.sleep(seconds)
    del block  # image-sized frees go back to the OS


return_large_frees()
if sys.argv[1] == "below_record":
    hold(300, 0.0)  # the process record is now ~300 MiB above today's RSS
    with MemoryPeak(measure="resident") as p:
        hold(100)
else:
    with MemoryPeak(measure="resident") as p:
        hold(400, 0.0)
print(p.peak_mib)
"""


def resident_peak_mib(case: str) -> float:
    """In a fresh process: a test worker's heap reuses freed chunks without raising the RSS."""
    res = subprocess.run(
        [sys.executable, "-c", RESIDENT_PROBE, case], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return float(res.stdout.split()[-1])


@linux_only
def test_resident_fallback_reads_the_block_not_the_earlier_record():
    """The process record (ru_maxrss) alone would read ~300 here, the RSS at the end alone ~0."""
    assert 80 < resident_peak_mib("below_record") < 200


@linux_only
def test_resident_fallback_reads_a_new_record_exactly():
    assert 350 < resident_peak_mib("new_record") < 500
