"""regcore.heap: image-sized frees go back to the operating system (glibc), the environment can override."""

import subprocess
import sys

import pytest

from regcore.heap import return_large_frees

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")


PROBE = """
import numpy as np
from regcore.heap import MMAP_THRESHOLD_BYTES, return_large_frees


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


assert return_large_frees()
size = 2 * MMAP_THRESHOLD_BYTES
for _ in range(2):  # glibc's default would keep the second block in the heap (threshold raised by the first)
    block = np.ones(size, np.uint8)
    held = rss_bytes()
    del block
    print(held - rss_bytes() > 0.9 * size)
"""


@linux_only
def test_a_freed_image_sized_array_is_returned_at_once():
    """In a fresh process, as the CLI and the server call it first thing: in a long-lived test worker, free
    image-sized chunks left in the heap by earlier tests would be reused before any new memory map."""
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["True", "True"]


def test_an_explicit_environment_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert return_large_frees() is False
