"""The aligned buffers of devices/blockio.py pass from thread to thread; devices/memory.py."""

from __future__ import annotations

import ctypes
import mmap
import threading

import pytest

from recovery.devices import blockio, memory


def _in_a_thread(local: threading.local, size: int) -> int:
    """The address of the buffer a new thread gets, after it wrote into it and ended."""
    seen: list[int] = []

    def run() -> None:
        view = blockio._thread_buffer(local, "buf", size)
        view[:4] = b"used"
        seen.append(id(local.buf.buf))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return seen[0]


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> blockio._Buffers:
    """A pool of its own in place of the process's."""
    fresh = blockio._Buffers()
    monkeypatch.setattr(blockio, "_BUFFERS", fresh)
    return fresh


def test_a_buffer_outlives_its_thread_and_serves_the_next(pool: blockio._Buffers) -> None:
    local = threading.local()
    first = _in_a_thread(local, 1 << 20)
    assert [id(b) for b in pool._free] == [first]
    assert _in_a_thread(local, 2 << 20) == first  # the same pages, no new mapping


def test_buffers_are_private_aligned_and_at_least_a_cell() -> None:
    pool = blockio._Buffers()
    buf = pool.take(4096)
    assert len(buf) == blockio._Buffers.SMALLEST
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert address % mmap.PAGESIZE == 0  # what O_DIRECT needs
    assert len(pool.take(9 << 20)) == 9 << 20


def test_the_pool_keeps_a_bounded_amount() -> None:
    pool = blockio._Buffers()
    for _ in range(blockio._Buffers.KEEP // blockio._Buffers.SMALLEST + 3):
        pool.give(mmap.mmap(-1, blockio._Buffers.SMALLEST))
    assert sum(map(len, pool._free)) == blockio._Buffers.KEEP


def test_a_grown_buffer_returns_the_smaller_one(pool: blockio._Buffers) -> None:
    local = threading.local()
    blockio._thread_buffer(local, "buf", 1 << 20).release()
    blockio._thread_buffer(local, "buf", 8 << 20).release()
    assert [len(b) for b in pool._free] == [blockio._Buffers.SMALLEST]


def test_tuning_the_allocator_is_harmless_to_call_again() -> None:
    memory.tune_allocator()
    memory.tune_allocator()
    assert bytes(64 << 20)[-1] == 0
