"""Keeping a long-running process's resident memory flat.

glibc raises its mmap threshold every time a large block is freed, after
which large buffers (tiles, feature maps, label grids) come from heap arenas
that are rarely given back to the system: resident memory then follows the
largest slide ever seen. Pinning the threshold makes every large buffer its
own mapping, returned to the system as soon as it is freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 1 << 20  # bytes; larger allocations get their own mapping


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def trim() -> None:
    """Give free heap pages back to the system (glibc's malloc_trim); a no-op elsewhere.

    Reader threads leave freed memory in their own arenas; trimming between
    the stages of a job keeps it from adding up with the next stage's needs.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def return_freed_memory() -> bool:
    """Pin glibc's mmap and trim thresholds; False where the C library is not glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK) == 1
    return ok and mallopt(M_TRIM_THRESHOLD, 4 * LARGE_BLOCK) == 1
