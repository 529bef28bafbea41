"""Give large freed arrays back to the operating system at once (glibc's malloc; a no-op elsewhere).

glibc serves a request of at least the *mmap threshold* (128 KiB at start) with its own memory map, which
``free`` unmaps. But each such free raises the threshold up to the size just freed (at most 32 MiB), so
after the first large free, image-sized arrays (a 1 mm brain volume is 28 MiB in float32) come from the
heap and its per-thread arenas, where freed blocks stay mapped. A 1 mm 3D ``regcore register`` run then
peaked ~1450 MiB where its live arrays needed ~1220 (benchmarks/register_e2e.py).
:func:`return_large_frees` fixes the threshold, so arrays of 16 MiB and more are always mapped on their own
and given back when freed. An explicit ``MALLOC_MMAP_THRESHOLD_`` in the environment wins.
"""

from __future__ import annotations

import os
import sys

MMAP_THRESHOLD_BYTES = 16 << 20
"""Allocations of this size and larger get their own memory map (returned to the system when freed)."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def return_large_frees(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes``; True when it was set (Linux with glibc only)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator as it is
        return False
