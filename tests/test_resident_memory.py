"""ResidentPeak / Timer: a block's RSS peak, not the process's earlier record and not 0.

Each case runs in a fresh process: in a long-lived test worker, free chunks left in the heap by earlier tests
are reused before any new memory is mapped, so an allocation need not raise the RSS at all.
"""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

PROBE = """
import sys
import time

import torch

from regcore.heap import return_large_frees
from regcore.methods.base import Timer
from regcore.resident_memory import ResidentPeak


def hold(mib, seconds=0.1):
    block = torch.ones(mib * 2**18)  # touched: resident
    time.sleep(seconds)
    del block  # image-sized frees go back to the OS


return_large_frees()
case = sys.argv[1]
if case == "below_record":
    hold(300, 0.0)  # the process record is now ~300 MiB above today's RSS
    with Timer(torch.device("cpu")) as t:
        hold(100)
    print(t.peak_memory_mb)
elif case == "new_record":
    with ResidentPeak() as p:
        hold(400, 0.0)
    print(p.peak_mib)
else:
    with ResidentPeak() as p:
        time.sleep(0.05)
    print(p.peak_mib)
"""


def peak_mib(case: str) -> float:
    res = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return float(res.stdout.split()[-1])


def test_block_below_an_earlier_record_reads_its_own_peak():
    """The process-wide record (ru_maxrss) alone would read ~300 here, the RSS at the end alone 0."""
    assert 80 < peak_mib("below_record") < 200


def test_block_that_sets_a_new_record_reads_it():
    assert 350 < peak_mib("new_record") < 500


def test_nothing_allocated_reads_near_zero():
    assert peak_mib("idle") < 20
