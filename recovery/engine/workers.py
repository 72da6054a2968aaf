"""Worker threads for the engine's hot paths: how many, and a bounded window of work in flight.

Called by :mod:`~recovery.engine.backup`, :mod:`~recovery.engine.restore` and
:mod:`~recovery.engine.clone` (and the thread count by :mod:`~recovery.engine.images`). Hashing,
compressing and block I/O release the GIL, so threads use every core. :func:`in_order` keeps at
most a fixed number of items in flight, so memory stays flat on any disk size, and hands back
results in the order the items came, which the maps and progress rely on.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from recovery.engine.progress import CancelToken

WORKERS = max(2, os.cpu_count() or 2)
"""Threads for CPU-bound work (hash, compress, decompress): one per core, at least two."""

PIPELINE_WORKERS = (os.cpu_count() or 2) + 2
"""Threads for work whose CPU-bound steps alternate with device I/O (backup: read, hash,
compress, write a chunk file; restore: read a chunk, decompress, verify, write): two more than
the cores, so a core whose thread waits on a read or write has another one to run. Measured on
2 cores, the 6 GiB reference disk (alternating runs): backup 9.2-12.6 s with 2 threads, 8.7-9.1
s with 3, 8.5-9.6 s with 4; restore of its image 4.4-5.2 s with 2, 4.0-4.1 s with 3 or 4. Each
thread holds about two cells' buffers, so memory grows with the cores, not the disk."""

COPY_WORKERS = max(4, 2 * (os.cpu_count() or 2))
"""Threads for copying between two devices, which waits on them more than on the CPU: more
threads than cores keep both busy (3.4 GB cloned in 10.8 s with 2 threads, 9.7 s with 6)."""

T = TypeVar("T")
R = TypeVar("R")


def window_size(workers: int) -> int:
    """Items in flight: enough that no thread waits for work while the caller handles a result,
    few enough that memory is a few cells per thread."""
    return 2 * workers + 4


def in_order(
    work: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    name: str,
    cancel: CancelToken,
) -> Generator[tuple[T, R], None, None]:
    """Run ``work(item)`` in ``workers`` threads and yield ``(item, result)`` in item order.

    At most :func:`window_size` items are in flight. ``cancel`` is checked before each item is
    taken. The first exception (from ``work``, from ``items`` or a cancellation) propagates;
    queued work is then dropped and running work finishes before this returns. Use it under
    ``contextlib.closing`` so the same happens when the caller's loop body raises.
    """
    limit = window_size(workers)
    pending: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        try:
            for item in items:
                cancel.check()
                pending.append((item, pool.submit(work, item)))
                if len(pending) >= limit:
                    first, fut = pending.popleft()
                    yield first, fut.result()
            while pending:
                first, fut = pending.popleft()
                yield first, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()
