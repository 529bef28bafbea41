"""regcore.heap: image-sized frees go back to the operating system (glibc), the environment can override."""

import subprocess
import sys

import pytest

from regcore.heap import return_large_frees

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")


PROBE = """
import sys

import numpy as np
from regcore.heap import MMAP_THRESHOLD_BYTES, return_large_frees


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


if sys.argv[1] == "fixed":
    assert return_large_frees()
# glibc's default raises its threshold to the first block freed (20 MiB): the second (17 MiB) would then come
# from the heap and stay mapped after its free; with the threshold fixed at 16 MiB both are given back
for size in (MMAP_THRESHOLD_BYTES + (4 << 20), MMAP_THRESHOLD_BYTES + (1 << 20)):
    block = np.ones(size, np.uint8)
    held = rss_bytes()
    del block
    print(held - rss_bytes() > 0.9 * size)
"""


def returned(setting: str) -> list[str]:
    """Whether each of the probe's two freed blocks left the process's resident memory (a fresh process)."""
    res = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.split()


@linux_only
def test_a_freed_image_sized_array_is_returned_at_once():
    """In fresh processes, as the CLI and the server call it first thing (in a long-lived test worker, free
    image-sized chunks left in the heap by earlier tests would be reused before any new memory map)."""
    assert returned("default") == ["True", "False"]  # what glibc does alone: the probe can tell
    assert returned("fixed") == ["True", "True"]


def test_an_explicit_environment_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert return_large_frees() is False
