"""The bytes of the composed file a file system is shrunk on (docs/SHRINK.md).

Called by :mod:`recovery.engine.shrink`, whose FUSE server answers reads and writes with it.
Pure: the front (the target's new partition range) and the tail (the source, read-only) are
callables the engine passes in. Promises:

- ``[0, split)`` is the front: reads and writes go to ``front_read``/``front_write``;
- ``[split, size)`` is the tail: reads come from ``tail_read`` except where something was
  written, which is kept in an overlay of :data:`PAGE`-byte pages and read back from it;
- the overlay never holds more than ``overlay_limit`` bytes: a write that would need more
  raises :class:`OverlayFull` and changes nothing, so memory stays bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

PAGE = 4096

Reader = Callable[[int, int], bytes]
"""``(offset, length) -> bytes``: exactly ``length`` bytes (short only at the end)."""
Writer = Callable[[bytes, int], None]
"""``(data, offset)``: all of ``data`` at ``offset``."""


class OverlayFull(Exception):
    """A write into the tail would take the overlay past its bound."""


class ComposedFile:
    def __init__(
        self,
        size: int,
        split: int,
        front_read: Reader,
        front_write: Writer | None,
        tail_read: Reader,
        overlay_limit: int,
    ) -> None:
        if not 0 <= split <= size:
            raise ValueError("the front must lie within the file")
        self.size = size
        self.split = split
        self._front_read = front_read
        self._front_write = front_write
        self._tail_read = tail_read
        self.overlay_limit = overlay_limit
        self._pages: dict[int, bytes] = {}
        self._lock = threading.Lock()

    @property
    def writable(self) -> bool:
        return self._front_write is not None

    @property
    def overlay_bytes(self) -> int:
        return len(self._pages) * PAGE

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray()
        pos = offset
        end = offset + length
        while pos < end:
            if pos < self.split:
                n = min(end, self.split) - pos
                out += self._exact(self._front_read, pos, n)
            else:
                n = min(end, (pos // PAGE + 1) * PAGE) - pos
                out += self._tail_page(pos // PAGE)[pos % PAGE : pos % PAGE + n]
            pos += n
        return bytes(out)

    def write(self, data: bytes, offset: int) -> int:
        if self._front_write is None:
            raise PermissionError("the composed file is read-only")
        end = min(offset + len(data), self.size)
        if offset >= end:
            return 0
        if offset < self.split:
            n = min(end, self.split) - offset
            self._front_write(data[:n], offset)
            if end <= self.split:
                return n
        first = max(offset, self.split)
        with self._lock:
            pages = range(first // PAGE, (end - 1) // PAGE + 1)
            new = sum(1 for p in pages if p not in self._pages)
            if (len(self._pages) + new) * PAGE > self.overlay_limit:
                raise OverlayFull(
                    f"writes beyond the new end would need more than {self.overlay_limit} bytes"
                )
            for p in pages:
                page = bytearray(self._tail_page(p))
                lo = max(first, p * PAGE)
                hi = min(end, (p + 1) * PAGE)
                page[lo - p * PAGE : hi - p * PAGE] = data[lo - offset : hi - offset]
                self._pages[p] = bytes(page)
        return end - offset

    def _tail_page(self, page: int) -> bytes:
        got = self._pages.get(page)
        if got is not None:
            return got
        start = max(page * PAGE, self.split)
        n = min((page + 1) * PAGE, self.size) - start
        data = self._exact(self._tail_read, start, n)
        # A page that straddles the split holds front bytes too; they are never served from it.
        return bytes(start - page * PAGE) + data

    @staticmethod
    def _exact(read: Reader, offset: int, length: int) -> bytes:
        data = read(offset, length)
        if len(data) < length:
            data += bytes(length - len(data))
        return data[:length]
