"""Cutting a stream's used extents into fixed cells (docs/FORMAT.md, "Terms").

A cell is stored when any of its bytes is used; within it, only the used pieces are read and
the rest is left zero. Cells with no used byte are UNUSED and never visited.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple


class Cell(NamedTuple):
    number: int
    size: int
    """Bytes in the cell (cell_size, less for the last one)."""
    pieces: tuple[tuple[int, int], ...]
    """Used ``(offset within cell, length)`` ranges, sorted."""

    @property
    def used(self) -> int:
        return sum(n for _, n in self.pieces)


def cells(extents: Iterable[tuple[int, int]], cell_size: int, size: int) -> Iterator[Cell]:
    """Cells touched by sorted, non-overlapping ``extents`` within a stream of ``size`` bytes."""
    current = -1
    pieces: list[tuple[int, int]] = []
    for start, length in extents:
        end = min(start + length, size)
        pos = max(start, 0)
        while pos < end:
            index = pos // cell_size
            cell_start = index * cell_size
            piece_end = min(end, cell_start + cell_size)
            if index != current:
                if pieces:
                    yield _cell(current, cell_size, size, pieces)
                current, pieces = index, []
            pieces.append((pos - cell_start, piece_end - pos))
            pos = piece_end
    if pieces:
        yield _cell(current, cell_size, size, pieces)


def _cell(index: int, cell_size: int, size: int, pieces: list[tuple[int, int]]) -> Cell:
    return Cell(index, min(cell_size, size - index * cell_size), tuple(pieces))


def gaps(
    size: int, occupied: Iterable[tuple[int, int]], cap: int, keep: int
) -> list[tuple[int, int]]:
    """The ranges of ``[0, size)`` outside ``occupied`` (sorted extents).

    A gap longer than ``cap`` keeps only its first and last ``keep`` bytes: boot loaders live
    after the table, EBRs and GPT backups right before a partition or the disk's end, and a
    large unpartitioned stretch holds nothing a restore needs.
    """
    out: list[tuple[int, int]] = []
    pos = 0

    def add(a: int, b: int) -> None:
        if b <= a:
            return
        if b - a <= cap:
            out.append((a, b - a))
        else:
            out.append((a, keep))
            out.append((b - keep, keep))

    for start, length in sorted(occupied):
        add(pos, min(start, size))
        pos = max(pos, start + length)
    add(pos, size)
    return out
