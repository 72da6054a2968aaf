"""Extent arithmetic: sorted, non-overlapping ``(start, length)`` byte ranges."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple


class Extent(NamedTuple):
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


def merge(extents: Iterable[tuple[int, int]]) -> Iterator[Extent]:
    """Coalesce sorted extents that touch or overlap. Input must be sorted by start."""
    cur_start = cur_end = -1
    for start, length in extents:
        if length <= 0:
            continue
        end = start + length
        if start < cur_start:
            raise ValueError("extents are not sorted")
        if start <= cur_end:
            cur_end = max(cur_end, end)
            continue
        if cur_end > cur_start >= 0:
            yield Extent(cur_start, cur_end - cur_start)
        cur_start, cur_end = start, end
    if cur_end > cur_start >= 0:
        yield Extent(cur_start, cur_end - cur_start)


def clip(extents: Iterable[tuple[int, int]], limit: int) -> Iterator[Extent]:
    """Cut extents at ``limit`` (drop what lies at or beyond it)."""
    for start, length in extents:
        if start >= limit:
            return
        yield Extent(start, min(length, limit - start))


def total(extents: Iterable[tuple[int, int]]) -> int:
    return sum(length for _, length in extents)
