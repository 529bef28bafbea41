"""ResidentPeak / Timer: a block's RSS peak, not the process's earlier record and not 0."""

import sys
import time

import pytest
import torch

from regcore.methods.base import Timer
from regcore.resident_memory import ResidentPeak, resident_mib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")


def _hold(mib: int, seconds: float = 0.1) -> None:
    """Allocate and touch ``mib`` MiB (freed on return: large blocks go back to the OS)."""
    block = torch.ones(mib * 2**18)
    time.sleep(seconds)
    del block


def test_block_below_an_earlier_record_reads_its_own_peak():
    _hold(300, 0.0)  # the process record is now >= 300 MiB above today's RSS
    with Timer(torch.device("cpu")) as t:
        _hold(100)
    assert 80 < t.peak_memory_mb < 200, t.peak_memory_mb


def test_block_that_sets_a_new_record_reads_it():
    with ResidentPeak() as p:
        _hold(400, 0.0)
    assert 350 < p.peak_mib < 500, p.peak_mib


def test_nothing_allocated_reads_near_zero():
    before = resident_mib()
    with ResidentPeak() as p:
        time.sleep(0.05)
    assert before > 0 and p.peak_mib < 20, p.peak_mib
