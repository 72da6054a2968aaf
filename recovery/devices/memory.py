"""How the C allocator hands out the engine's big buffers: once per process, before any runs.

Called by :func:`recovery.cli.main` (the CLI and the TUI). The engine's worker threads allocate
and free cell-sized buffers all the time (a chunk decompressed, a table sliced out of a cell,
a copy of what a device returned). glibc's defaults give each thread its own arena, map every
buffer over its dynamic threshold afresh, and hand freed memory back to the kernel as soon as
a few MiB lie free at an arena's top; the next buffer is then new memory again, and touching
new memory costs a page fault per 4 KiB (about 2 us each on the bench machine). A delta
restore of the bench disk took 33,000 faults while planning and 16,000 while writing.

So: at most :data:`ARENAS` arenas (Python allocates under the GIL anyway, and C code seldom),
buffers under :data:`MMAP_BELOW` come from the arenas, and up to :data:`KEEP_FREE` may lie free
before memory goes back. Freed buffers are then reused in place: the peak resident memory stays
what the busiest moment needs, it is only not given back between phases. Alternating runs of
that delta restore: median 0.61 s against 0.68 s. A C library without ``mallopt`` (musl) is
left as it is.
"""

from __future__ import annotations

import contextlib

ARENAS = 2
MMAP_BELOW = 32 << 20
KEEP_FREE = 128 << 20

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> None:
    """Set glibc's allocator for the engine's buffers (see the module's docstring)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt(_M_ARENA_MAX, ARENAS)
        mallopt(_M_MMAP_THRESHOLD, MMAP_BELOW)
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREE)
