"""The pure parts of an image's read-only view (``recovery open``, ``recovery extract``).

Called by :mod:`recovery.engine.view` (the FUSE server) and :mod:`recovery.engine.extract`.
Promises, without any I/O:

- :class:`DiskLayout` says which stream serves each byte of ``disk.img``: the layout stream
  ``disk`` under everything, each partition stream over it at its source offset, zeros where no
  stream reaches (docs/FORMAT.md, "Manifests": a stream's ``start``). This is what restore
  writes onto a disk of the source's size.
- :class:`CellCache` bounds the decompressed cells held in memory by their total bytes, and
  loads a cell once however many threads ask for it at the same time.
- :class:`ReadAhead` says which cells to load ahead of a reader going through a stream in
  order, and none for one that reads a small file.
- :func:`parse_image_path` reads ``pN:/path/in/fs`` as ``extract`` takes it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from recovery.errors import UsageError

CACHE_LIMIT = 256 << 20
"""The most decompressed cell bytes a view keeps (issue 12: at most 256 MiB)."""


class Piece(NamedTuple):
    stream: str | None
    """The stream id that holds these bytes, or None for bytes no stream covers (zeros)."""
    offset: int
    """Offset within the stream (0 when ``stream`` is None)."""
    length: int


@dataclass(frozen=True)
class Placed:
    stream: str
    start: int
    """Byte offset of the stream on the source disk."""
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


class DiskLayout:
    """``disk.img`` as a sequence of pieces of streams.

    ``base`` is the layout stream (or None), ``parts`` the partition streams; a partition wins
    over the layout stream where they overlap (the layout stream holds zeros, unused, there).
    """

    def __init__(self, size: int, base: Placed | None, parts: list[Placed]) -> None:
        self.size = size
        spans: list[tuple[int, int, str | None, int]] = []  # (start, end, stream, stream offset)
        cuts = sorted((p for p in parts if p.size > 0 and p.start < size), key=lambda p: p.start)
        pos = 0
        for p in cuts:
            if p.start < pos:
                raise ValueError(f"stream {p.stream} overlaps the one before it")
            if p.start > pos:
                spans.extend(self._base(base, pos, p.start))
            spans.append((p.start, min(p.end, size), p.stream, 0))
            pos = min(p.end, size)
        if pos < size:
            spans.extend(self._base(base, pos, size))
        self.spans = spans

    @staticmethod
    def _base(base: Placed | None, start: int, end: int) -> list[tuple[int, int, str | None, int]]:
        if base is None or base.end <= start:
            return [(start, end, None, 0)]
        covered = min(end, base.end)
        out: list[tuple[int, int, str | None, int]] = [
            (start, covered, base.stream, start - base.start)
        ]
        if covered < end:
            out.append((covered, end, None, 0))
        return out

    def pieces(self, offset: int, length: int) -> Iterator[Piece]:
        """The pieces that make up bytes ``[offset, offset+length)`` (cut short at the end)."""
        end = min(offset + length, self.size)
        for start, stop, stream, base in self.spans:
            if stop <= offset or start >= end:
                continue
            a, b = max(start, offset), min(stop, end)
            yield Piece(stream, base + a - start if stream is not None else 0, b - a)


class CellCache:
    """A least-recently-used cache of decompressed cells, bounded by their total size.

    ``get(key, load)`` returns the cached bytes or calls ``load()`` once; threads asking for a
    key being loaded wait for that load instead of starting another. A failed load is not
    cached: the next reader tries again (and gets the same error if the chunk is damaged).
    """

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._loading: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items or key in self._loading

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, load: Callable[[], bytes]) -> bytes:
        while True:
            with self._lock:
                data = self._items.get(key)
                if data is not None:
                    self._items.move_to_end(key)
                    return data
                pending = self._loading.get(key)
                if pending is None:
                    pending = self._loading[key] = threading.Event()
                    break
            pending.wait()
        try:
            data = load()
        except BaseException:
            with self._lock:
                del self._loading[key]
            pending.set()
            raise
        with self._lock:
            del self._loading[key]
            if len(data) <= self.limit:
                self._items[key] = data
                self.size += len(data)
                while self.size > self.limit:
                    _, old = self._items.popitem(last=False)
                    self.size -= len(old)
        pending.set()
        return data


class ReadAhead:
    """Which cells to load ahead of a stream's reader.

    Only a reader that has gone on in order across ``after`` cell boundaries gets the ``depth``
    cells after the one it reads: a small file that crosses one boundary loads nothing more
    than its own cells (issue 12: reading one small file reads only the cells that hold it).
    The kernel sends several requests of a sequential reader at once, so a request up to
    ``depth`` cells behind the furthest one neither starts nor breaks a run; any other jump
    starts a new one.
    """

    def __init__(self, depth: int, after: int = 2) -> None:
        self.depth = depth
        self.after = after
        self._runs: dict[Hashable, tuple[int, int]] = {}
        """stream -> (the furthest cell of its run, boundaries crossed in order so far)"""
        self._lock = threading.Lock()

    def note(self, stream: Hashable, cell: int) -> range:
        """A read in ``cell`` of ``stream``: the cells to load ahead (maybe none)."""
        with self._lock:
            last, crossed = self._runs.get(stream, (-2, 0))
            if cell == last + 1:
                last, crossed = cell, crossed + 1
            elif last - self.depth <= cell <= last:
                return range(0)
            else:
                last, crossed = cell, 0
            self._runs[stream] = (last, crossed)
        if crossed < self.after:
            return range(0)
        return range(cell + 1, cell + 1 + self.depth)


def parse_image_path(text: str) -> tuple[int, str]:
    """``pN:/path`` -> (N, "/path"); the path is made absolute and normalised, never above /."""
    prefix, sep, path = text.partition(":")
    if not sep or not prefix.startswith("p") or not prefix[1:].isdigit():
        raise UsageError(
            f"'{text}' does not name a place in a disk image: write pN:/path, "
            "e.g. p2:/home/alice/thesis"
        )
    parts: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        parts.append(name)
    return int(prefix[1:]), "/" + "/".join(parts)
