"""How a long-running server's C library hands memory back to the system.

The policy is chosen once per server, by its device and extractors, before
any thread starts:

* GPU servers **return freed memory**. glibc raises its mmap threshold every
  time a large block is freed, after which large buffers (tiles, label
  grids) come from heap arenas that are rarely given back: resident memory
  would follow the largest slide ever seen. Pinning the threshold makes
  every large buffer its own mapping, returned as soon as it is freed.
* CPU servers that run a network **keep freed memory** for the next batch.
  There the activations (tens to hundreds of MB per batch) are host memory
  too, and a mapping per buffer means that every batch faults all of them in
  again and the kernel zeroes them: ResNet-50 through ``fseg segment`` spent
  14 of its 42 CPU-seconds in the kernel and extracted at half the speed of
  the same forward passes in a plain loop. :func:`trim` after a job's stream
  gives the free pages back; within a job, freed blocks of many sizes share
  one heap, so the peak varies more from run to run (for ``stain`` on a
  10,000 px slide: 1.2 to 1.5 GB over runs).
* CPU servers of ``stain`` alone keep glibc's own policy: it was as fast as
  keeping within this machine's noise, and its peak was steady (1.24 and
  1.28 GB for a 10,000 and a 20,000 px slide).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
LARGE_BLOCK = 1 << 20  # bytes; larger allocations get their own mapping when returning
#: Keeping: allocations larger than this still get their own mapping (1 GiB,
#: more than any activation of a default batch).
KEPT_BLOCK_MAX = 1 << 30
#: Set to 0 to leave glibc's allocator as it is in a CPU server.
KEEP_ENV = "FSEG_KEEP_HOST_MEMORY"


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _mallopt(*settings: tuple[int, int]) -> bool:
    """Apply glibc ``mallopt`` settings in order; False where the C library has none."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in settings)


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
    return _mallopt((M_MMAP_THRESHOLD, LARGE_BLOCK), (M_TRIM_THRESHOLD, 4 * LARGE_BLOCK))


def keep_freed_memory() -> bool:
    """Serve large blocks from one heap that is not trimmed on every free; False where
    the C library is not glibc or ``FSEG_KEEP_HOST_MEMORY=0``.

    One arena for every thread: a thread's own arena maps each block larger
    than its 64 MiB heaps and unmaps it on free, whatever the threshold. Call
    before the process starts threads (a thread that has allocated keeps its
    arena).
    """
    if os.environ.get(KEEP_ENV, "1") == "0":
        return False
    return _mallopt(
        (M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, KEPT_BLOCK_MAX), (M_TRIM_THRESHOLD, 2**31 - 1)
    )


def tune_for_server(device_type: str, runs_networks: bool) -> bool:
    """The policy for a server computing on ``device_type`` (``cpu`` or ``cuda``); False
    where glibc's own is kept."""
    if device_type != "cpu":
        return return_freed_memory()
    return keep_freed_memory() if runs_networks else False
