"""engine/reading.py's fast path on a plain file (O_DIRECT works on ext4 files as on disks):
a reused, aligned buffer must give exactly what a fresh one gave, used pieces as the source
holds them and zeros everywhere else, whatever the previous cell left in it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from recovery.core.cells import Cell
from recovery.engine import reading
from recovery.engine.reading import SourceReader

CELL = 1 << 20


def expected(data: bytes, start: int, cell: Cell) -> bytes:
    out = bytearray(cell.size)
    base = start + cell.number * CELL
    for off, n in cell.pieces:
        out[off : off + n] = data[base + off : base + off + n]
    return bytes(out)


@pytest.mark.parametrize("start", [0, 512 * 63], ids=["aligned", "sector-63"])
def test_cells_read_direct_equal_cells_read_through_the_cache(tmp_path: Path, start: int) -> None:
    rng = random.Random(5)
    data = rng.randbytes(start + 4 * CELL)
    path = tmp_path / "disk"
    path.write_bytes(data)
    cells = [
        Cell(0, CELL, ((0, CELL),)),  # all used: leaves no zero in the buffer
        Cell(1, CELL, ((4096, 8192), (40960, 4096), (700000, 1000), (CELL - 4096, 4096))),
        Cell(2, CELL, ((0, 4096),)),
        Cell(3, CELL - 5000, ((512, 1024), (CELL - 9096, 4096))),  # the last, shorter cell
    ]
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = SourceReader(fd, str(path), start, CELL)
        assert reader._fast is (start == 0)  # direct only when the stream is aligned
        for cell in cells * 2:
            assert bytes(reader.read_cell(cell)) == expected(data, start, cell), cell
        reader.close()
    finally:
        os.close(fd)


def test_a_failed_direct_read_is_read_again_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(6).randbytes(2 * CELL)
    path = tmp_path / "disk"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    real = os.preadv

    def failing(fd_: int, buffers: list[memoryview], offset: int) -> int:
        if fd_ == reader._direct_fd:
            raise OSError(5, "Input/output error")
        return real(fd_, buffers, offset)

    try:
        reader = SourceReader(fd, str(path), 0, CELL)
        monkeypatch.setattr(reading.os, "preadv", failing)
        cell = Cell(1, CELL, ((0, 8192), (500000, 4096)))
        assert bytes(reader.read_cell(cell)) == expected(data, 0, cell)
        assert not reader.unreadable
        reader.close()
    finally:
        os.close(fd)


def test_zeroed_ranges_are_given_as_zeros_and_not_read(tmp_path: Path) -> None:
    """A clean journal's blocks (FileSystem.zeroed_extents): used, so inside the cell's pieces,
    but zeros in the cell whatever the source holds there, on the fast path and the slow."""
    data = random.Random(7).randbytes(4096 + 3 * CELL)
    path = tmp_path / "disk"
    path.write_bytes(data)
    zeroed = [(CELL - 8192, 8192 + 4096), (2 * CELL + 100, 50)]
    fd = os.open(path, os.O_RDONLY)
    try:
        for start in (0, 4096 - 512):  # direct, then through the cache
            reader = SourceReader(fd, str(path), start, CELL, zeroed=zeroed)
            for cell in (
                Cell(0, CELL, ((0, CELL),)),
                Cell(1, CELL, ((0, 8192), (16384, 4096))),
                Cell(2, CELL, ((0, 4096),)),
            ):
                want = bytearray(expected(data, start, cell))
                base = cell.number * CELL
                for zs, zn in zeroed:
                    lo, hi = max(zs, base), min(zs + zn, base + CELL)
                    if lo < hi:
                        want[lo - base : hi - base] = bytes(hi - lo)
                assert bytes(reader.read_cell(cell)) == bytes(want), (start, cell.number)
            reader.close()
    finally:
        os.close(fd)
