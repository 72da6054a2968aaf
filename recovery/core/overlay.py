"""Bytes written over a read-only source, kept in memory page by page (a copy-on-write view).

Used by :mod:`recovery.devices.cowview` (the FUSE file a journal is replayed on) and by the
engine, which reads a partition through the pages that replay wrote (backup and clone of an
ext3/ext4 whose journal needs recovery: the source itself is never written). Pure: the source
is any object with ``pread(offset, length)``.

Invariants: pages are :data:`PAGE` bytes at multiples of :data:`PAGE`; a page holds the
source's bytes where nothing was written over them; :attr:`Overlay.size` bounds the memory.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Protocol

PAGE = 4096


class Readable(Protocol):
    size: int

    def pread(self, offset: int, length: int) -> bytes: ...


class Overlay:
    """Pages by index; immutable once built (the engine only reads it)."""

    def __init__(self, pages: Mapping[int, bytes]) -> None:
        for index, page in pages.items():
            if index < 0 or len(page) != PAGE:
                raise ValueError(f"overlay page {index} is not {PAGE} bytes")
        self._pages = dict(pages)
        self._sorted = sorted(self._pages)

    @property
    def size(self) -> int:
        """Bytes held."""
        return len(self._pages) * PAGE

    def __len__(self) -> int:
        return len(self._pages)

    def items(self) -> Iterator[tuple[int, bytes]]:
        for index in self._sorted:
            yield index, self._pages[index]

    def patch(self, buf: bytearray | memoryview, offset: int) -> None:
        """Lay every written page over ``buf``, which holds the source's bytes from ``offset``."""
        if not self._pages:
            return
        end = offset + len(buf)
        i = bisect.bisect_left(self._sorted, offset // PAGE)
        while i < len(self._sorted):
            index = self._sorted[i]
            pos = index * PAGE
            if pos >= end:
                break
            lo, hi = max(pos, offset), min(pos + PAGE, end)
            buf[lo - offset : hi - offset] = self._pages[index][lo - pos : hi - pos]
            i += 1


class OverlaySource:
    """A source read through an :class:`Overlay`: what the source holds after the writes."""

    def __init__(self, base: Readable, overlay: Overlay) -> None:
        self.base = base
        self.overlay = overlay
        self.size = base.size

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(self.base.pread(offset, length))
        self.overlay.patch(buf, offset)
        return bytes(buf)


class PageWriter:
    """The pages of an overlay being written (the FUSE side): bounded, thread-unsafe (the caller
    holds a lock)."""

    def __init__(self, source: Readable, limit: int) -> None:
        self.source = source
        self.limit = limit
        self.pages: dict[int, bytearray] = {}

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.source.size - offset))
        buf = bytearray(self.source.pread(offset, length))
        end = offset + length
        for index in range(offset // PAGE, -(-end // PAGE)):
            page = self.pages.get(index)
            if page is None:
                continue
            pos = index * PAGE
            lo, hi = max(pos, offset), min(pos + PAGE, end)
            buf[lo - offset : hi - offset] = page[lo - pos : hi - pos]
        return bytes(buf)

    def write(self, data: bytes, offset: int) -> bool:
        """Keep ``data`` at ``offset``; False (nothing kept) when it would pass the limit or
        the end of the source."""
        end = offset + len(data)
        if offset < 0 or end > self.source.size:
            return False
        first, last = offset // PAGE, -(-end // PAGE)
        new = sum(1 for i in range(first, last) if i not in self.pages)
        if (len(self.pages) + new) * PAGE > self.limit:
            return False
        for index in range(first, last):
            page = self.pages.get(index)
            pos = index * PAGE
            if page is None:
                page = bytearray(self.source.pread(pos, PAGE).ljust(PAGE, b"\0"))
                self.pages[index] = page
            lo, hi = max(pos, offset), min(pos + PAGE, end)
            page[lo - pos : hi - pos] = data[lo - offset : hi - offset]
        return True

    def overlay(self) -> Overlay:
        return Overlay({i: bytes(p) for i, p in self.pages.items()})
