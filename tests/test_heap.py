"""regcore.heap: image-sized frees go back to the operating system (glibc), the environment can override."""

import sys

import numpy as np
import pytest

from regcore.heap import MMAP_THRESHOLD_BYTES, return_large_frees

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@linux_only
def test_a_freed_image_sized_array_is_returned_at_once():
    assert return_large_frees()
    size = 2 * MMAP_THRESHOLD_BYTES
    for _ in range(
        2
    ):  # glibc's default would keep the second block in the heap (threshold raised by the first)
        block = np.ones(size, np.uint8)
        held = _rss_bytes()
        del block
        assert held - _rss_bytes() > 0.9 * size


def test_an_explicit_environment_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert return_large_frees() is False
