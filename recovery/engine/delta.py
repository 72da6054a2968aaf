"""Rapid delta restore and clone: which cells of a target already hold what would be written.

Called while planning by :mod:`recovery.engine.restore` and :mod:`recovery.engine.clone`, when
the target already has exactly the partition table the plan would write (same layout, same
disk and partition identifiers: an earlier restore or clone of the same disk). The plan
*measures*, it does not estimate: every cell the plan would write is read from the target
(O_DIRECT, read-only) and compared with what would be written, by the location's own hash
(:meth:`Repository.hash`, keyed in an encrypted location, so the map's digests compare as they
are) for a restore, byte for byte with the source for a clone. The plan then says exactly how
much already matches, and the run writes only the cells that differed.

Why measuring is sound: between the plan and its run the target is unmounted (checked again
before the first write), and ``check_still_same`` refuses a disk that is not the one measured,
so nothing but this run writes it. Reading is cheaper than writing (and needs no decompression),
so a restore of an image that changed a few per cent reads the disk once and writes a few per
cent of it. A partition that grows is written in full (its file system is grown again after).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from itertools import chain
from queue import SimpleQueue
from typing import TypeVar

from recovery.core.cells import Cell, cells
from recovery.core.table import Table
from recovery.core.units import human_size
from recovery.devices import blockio
from recovery.devices.partitions import read_table
from recovery.engine.progress import CancelToken
from recovery.engine.workers import COPY_WORKERS, in_order
from recovery.errors import DeviceError, RecoveryError
from recovery.filesystems.ext4 import SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Ext4
from recovery.repository.maps import DATA, ZERO, Record, StreamInfo, StreamReader
from recovery.repository.store import Repository

MEASURE_WORKERS = COPY_WORKERS
"""Threads reading and comparing target cells (4 on 2 cores; each holds one 4 MiB buffer).
Each thread hashes a cell right after the kernel copied it into its buffer (with few buffers
that copy is likelier still in the CPU's cache, which would explain the figures). Measuring
the 851 used cells of the benchmark disk (warm page cache, 3 rounds each, load 5-9): 16
threads took 0.92-0.98 s CPU here plus 0.70-0.79 s in the loop device's kernel worker, 4
threads 0.71-0.81 s plus 0.51-0.62 s, 2 threads about the same as 4; 1 MiB reads hashed
incrementally gained nothing. Cold, 16 threads were not clearly faster either (4.8 and 4.0 s
against 4.8 and 3.3 s with 4, load 20), and 4 reads of 4 MiB in flight keep an SSD busy."""

WRITE = 1
"""A cell flag: this cell differs on the target and is written."""
MATCH = 2
"""A cell flag: the target already holds this cell (0: a cell that is never written)."""

_Wanted = tuple[int, int, bytes | None]
"""A cell to compare: ``(cell, length, digest)``, digest None for a ZERO cell."""


@dataclass(frozen=True)
class StreamDelta:
    flags: bytes
    """One byte per cell of the stream: :data:`WRITE`, :data:`MATCH`, or 0 for a cell that is
    never written."""
    matching: int
    """Bytes of the cells that already hold what would be written."""
    writing: int
    """Bytes of the cells that differ and will be written."""
    size: int
    """The stream's size in bytes."""
    unread: int = 0
    """Of :attr:`matching`, the bytes counted without reading them: cells holding only the
    data of files whose inodes are the same on both sides (filesystems/ext4delta.py)."""


@dataclass(frozen=True)
class Delta:
    """What a plan measured on its target, per stream id."""

    streams: Mapping[str, StreamDelta]
    seconds: float
    """How long the measuring read took."""

    @property
    def matching_bytes(self) -> int:
        return sum(s.matching for s in self.streams.values())

    @property
    def write_bytes(self) -> int:
        return sum(s.writing for s in self.streams.values())

    @property
    def unread_bytes(self) -> int:
        return sum(s.unread for s in self.streams.values())

    def writes(self, sid: str, cell: int) -> bool:
        """Whether the run writes ``cell`` of stream ``sid`` (streams not measured: all)."""
        s = self.streams.get(sid)
        return s is None or s.flags[cell] == WRITE

    def untouched(self, sid: str) -> bool:
        """Whether the run writes nothing into stream ``sid``: measured, and every cell matched
        (then it needs no finishing and no check after the run: engine/finish.py)."""
        s = self.streams.get(sid)
        return s is not None and s.writing == 0

    def describe(self) -> list[str]:
        lines = [
            f"delta: {human_size(self.matching_bytes)} already match, "
            f"{human_size(self.write_bytes)} will be written",
            "  (measured: the target holds an earlier state of this disk, so only the cells "
            "that differ are written)",
        ]
        if self.unread_bytes:
            lines.append(
                f"  ({human_size(self.unread_bytes)} of it is the data of files whose inodes "
                "are unchanged, not read again; --full rewrites every byte)"
            )
        return lines


EXT_FSTYPES = Ext4.fstypes


def hold_superblock(fd: int, base: int) -> None:
    """Overwrite the primary superblock of the ext partition at ``base`` with zeros, on the
    device, before anything else is written into it; the caller writes the cell holding it
    last. A write cut short then leaves no file system (a mix of two states must not look like
    one: filesystems/ext4delta.py trusts inodes only on a file system that opens)."""
    blockio.pwrite_all(fd, bytes(SUPERBLOCK_SIZE), base + SUPERBLOCK_OFFSET)
    blockio.flush(fd, "the target")


def same_table(target: str, planned: Table) -> bool:
    """Whether ``target`` already has ``planned`` as its table: same kind, disk identifier,
    and every partition in the same place with the same type and identifiers."""
    try:
        current = read_table(target)
    except RecoveryError:
        return False
    if current is None:
        return False

    def key(t: Table) -> tuple[object, ...]:
        entries = tuple(
            sorted(
                (
                    e.number,
                    e.start,
                    e.size,
                    e.type.lower(),
                    (e.uuid or "").upper(),
                    e.name or "",
                )
                for e in t.entries
            )
        )
        return (t.label, (t.id or "").upper(), t.sector_size, entries)

    return key(current) == key(planned)


def cover_overwritten(
    delta: Delta, under: str, under_base: int, cell_size: int, over: Mapping[str, int]
) -> Delta:
    """``delta`` with every matching cell of the ``over`` streams (id -> target start) that lies
    under a written cell of stream ``under`` marked to write too.

    The layout stream of an image spans the whole disk and holds zeros where partitions are; a
    restore writes it first and the partitions over it. When one of its cells is written (its
    gaps differ, or the partition bytes it covers are not zero), it also zeroes the partitions'
    bytes in that cell, so their cells must be written again even where they matched.
    """
    lower = delta.streams.get(under)
    if lower is None:
        return delta
    written = [
        (under_base + c * cell_size, under_base + (c + 1) * cell_size)
        for c, flag in enumerate(lower.flags)
        if flag == WRITE
    ]
    streams = dict(delta.streams)
    for sid, base in over.items():
        upper = streams.get(sid)
        if upper is None:
            continue
        flags = bytearray(upper.flags)
        moved = 0
        for lo, hi in written:
            for c in range(
                max(0, (lo - base) // cell_size), min(len(flags), -(-(hi - base) // cell_size))
            ):
                if flags[c] == MATCH:
                    flags[c] = WRITE
                    moved += min(cell_size, upper.size - c * cell_size)
        if moved:
            streams[sid] = StreamDelta(
                bytes(flags),
                upper.matching - moved,
                upper.writing + moved,
                upper.size,
                min(upper.unread, upper.matching - moved),
            )
    return Delta(streams, delta.seconds)


def measure_restore(
    repo: Repository,
    image: str,
    cell_size: int,
    target: str,
    placed: Iterable[tuple[StreamInfo, int]],
    kept: Mapping[str, list[tuple[int, int]]] | None = None,
    cancel: CancelToken | None = None,
) -> Delta:
    """Hash every DATA and ZERO cell of each ``(stream, target_start)`` as the target holds it
    now and compare with the image's map.

    ``kept``: for a stream whose backup read only some byte ranges (the layout stream: the
    table and the gaps between partitions), those ranges; the rest of each of its cells was
    stored as zeros and is compared as zeros, since the partitions written over it are measured
    on their own.

    An ext2/3/4 partition that is the same file system on both sides is first asked which of
    its blocks may differ (filesystems/ext4delta.py: the data of a regular file whose inode is
    the same on both sides is the same); the cells holding none of those are counted as
    matching without being read."""
    kept = kept or {}
    started = time.monotonic()
    cancel = cancel or CancelToken()
    reader = blockio.DirectReader(target)
    out: dict[str, StreamDelta] = {}
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="inodes") as aside:
            chosen: list[tuple[StreamInfo, Callable[[_Wanted], bool], _Choice]] = []
            for stream, base in placed:
                maps = StreamReader(repo, stream, cell_size, image)
                records = [(cell, rec) for cell, rec in _records(maps) if rec.kind in (DATA, ZERO)]
                pieces = (
                    {c.number: c.pieces for c in cells(kept[stream.id], cell_size, stream.size)}
                    if stream.id in kept
                    else None
                )
                plan = _Choice(maps, reader, base, cell_size, records, aside)
                chosen.append((stream, _same(repo, reader, target, cell_size, base, pieces), plan))
            # The streams whose inodes are read aside go last: their scans start now.
            chosen.sort(key=lambda c: c[2].later is not None)
            # One pipeline for every stream, so no thread waits while a scan goes on: first the
            # cells compared in any case, of every stream, then those the scans name.
            wanted = chain(
                *(_tagged(k, plan.at_once()) for k, (_, _, plan) in enumerate(chosen)),
                *(_tagged(k, plan.after_scan()) for k, (_, _, plan) in enumerate(chosen)),
            )
            sames = [same for _, same, _ in chosen]

            def same(item: tuple[int, int, int, bytes | None]) -> bool:
                return sames[item[0]](item[1:])

            measured = _collect(
                [(stream.cells, stream.size) for stream, _, _ in chosen],
                wanted,
                same,
                cancel,
            )
            for (stream, _, plan), got in zip(chosen, measured, strict=True):
                out[stream.id] = plan.add_unread(got)
    finally:
        reader.close()
    return Delta(out, time.monotonic() - started)


def _tagged(k: int, items: Iterable[_Wanted]) -> Iterator[tuple[int, int, int, bytes | None]]:
    """``items`` of stream ``k`` of a pipeline over several streams."""
    for cell, length, digest in items:
        yield k, cell, length, digest


def _same(
    repo: Repository,
    reader: blockio.DirectReader,
    target: str,
    cell_size: int,
    base: int,
    pieces: dict[int, tuple[tuple[int, int], ...]] | None,
) -> Callable[[_Wanted], bool]:
    """Whether the target at ``base`` holds a cell of the stream: hashed by the location's own
    hash, or compared with zeros. ``pieces``: only those byte ranges of each cell count (the
    layout stream), the rest is compared as zeros."""

    def same(item: _Wanted) -> bool:
        cell, length, digest = item
        got = _read(reader, target, base + cell * cell_size, length)
        if pieces is not None:
            only = bytearray(length)
            for off, n in pieces.get(cell, ()):
                only[off : off + n] = got[off : off + n]
            got = memoryview(only)
        if digest is None:
            return _zeros(length).__eq__(got) is True
        return repo.hash(got) == digest

    return same


class _Choice:
    """Which cells of one stream are read and compared.

    Every DATA and ZERO cell, unless the stream is an ext2/3/4 that the inodes of both sides
    can vouch for (filesystems/ext4delta.py). Reading the inodes takes a while, so it runs
    aside while the cells that are compared in any case (superblocks, descriptors, bitmaps,
    inode tables) are compared first; then the cells the inodes name, group by group as the
    scan finds them (a cell compared that the scan's answer would not have named costs a read,
    never a wrong answer: only a finished scan's answer leaves cells unread)."""

    def __init__(
        self,
        maps: StreamReader,
        reader: blockio.DirectReader,
        base: int,
        cell_size: int,
        records: list[tuple[int, Record]],
        aside: ThreadPoolExecutor,
    ) -> None:
        self.records = records
        self.cell_size = cell_size
        self.unread: list[tuple[int, int]] = []
        self.first: set[int] = set()
        self.later: Future[set[int] | None] | None = None
        self.found: SimpleQueue[list[tuple[int, int]] | None] = SimpleQueue()
        """Ranges the inode scan found so far (None: it ended), compared while it goes on."""
        if maps.stream.raw.get("fstype") not in EXT_FSTYPES:
            return
        from recovery.filesystems import ext4delta

        fixed = ext4delta.metadata_ranges(maps)
        if fixed is None:
            return
        self.first = self._cells(fixed)
        part = _TargetPart(reader, base, maps.stream.size)

        def scan() -> set[int] | None:
            try:
                ranges = ext4delta.blocks_to_compare(maps, part, self.found.put)
                return None if ranges is None else self._cells(ranges)
            finally:
                self.found.put(None)

        self.later = aside.submit(scan)

    def _cells(self, ranges: Iterable[tuple[int, int]]) -> set[int]:
        cs = self.cell_size
        return {cell for at, n in ranges for cell in range(at // cs, -(-(at + n) // cs))}

    def at_once(self) -> Iterator[_Wanted]:
        """``(cell, length, digest)`` to compare in any case: every cell when no scan runs,
        else the metadata cells. The digest is None for a ZERO cell, compared with zeros
        (memcmp, several times faster than hashing)."""
        for cell, rec in self.records:
            if self.later is None or cell in self.first:
                yield cell, rec.length, rec.digest if rec.kind == DATA else None

    def after_scan(self) -> Iterator[_Wanted]:
        """The cells the scan names, as it finds them, then the ones its answer leaves (all
        not compared yet when it gave None); blocks while the scan goes on."""
        if self.later is None:
            return
        by_cell = dict(self.records)
        done = set(self.first)
        while (ranges := self.found.get()) is not None:
            for cell in sorted(self._cells(ranges) - done):
                named = by_cell.get(cell)
                if named is not None:
                    done.add(cell)
                    yield cell, named.length, named.digest if named.kind == DATA else None
        compare = self.later.result()
        for cell, rec in self.records:
            if cell in done:
                continue
            if compare is None or cell in compare:
                yield cell, rec.length, rec.digest if rec.kind == DATA else None
            else:
                self.unread.append((cell, rec.length))

    def add_unread(self, measured: StreamDelta) -> StreamDelta:
        """``measured`` with the cells the inodes vouched for counted as matching, unread."""
        if not self.unread:
            return measured
        flags = bytearray(measured.flags)
        more = 0
        for cell, length in self.unread:
            flags[cell] = MATCH
            more += length
        return StreamDelta(
            bytes(flags), measured.matching + more, measured.writing, measured.size, more
        )


class _TargetPart:
    """A partition of the target as a :class:`BlockSource`, read with O_DIRECT."""

    def __init__(self, reader: blockio.DirectReader, base: int, size: int) -> None:
        self.reader, self.base, self.size = reader, base, size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        return bytes(self.reader.read(self.base + offset, length)) if length else b""


def measure_clone(
    target: str,
    cell_size: int,
    placed: Iterable[tuple[str, int, int, Callable[[Cell], bytes | bytearray], Iterable[Cell]]],
    cancel: CancelToken | None = None,
) -> Delta:
    """Compare each used cell of the source with the target, byte for byte.

    ``placed``: per stream ``(id, its size, target start, read a source cell, the
    cells the clone copies)``."""
    started = time.monotonic()
    cancel = cancel or CancelToken()
    streams = list(placed)
    reader = blockio.DirectReader(target)

    def same(item: tuple[int, int, int, Cell]) -> bool:
        c = item[3]
        _, _, base, read, _ = streams[item[0]]
        src = read(c)
        got = _read(reader, target, base + c.number * cell_size, c.size)
        # memcmp: a bytearray on the left (see blockio.DirectWriter.matches).
        left = src if isinstance(src, bytearray) else bytearray(src)
        return left.__eq__(got) is True

    try:
        sizes = [(-(-size // cell_size), size) for _, size, _, _, _ in streams]
        measured = _collect(sizes, _clone_cells(streams), same, cancel)
    finally:
        reader.close()
    out = {sid: got for (sid, *_), got in zip(streams, measured, strict=True)}
    return Delta(out, time.monotonic() - started)


def _clone_cells(
    streams: list[tuple[str, int, int, Callable[[Cell], bytes | bytearray], Iterable[Cell]]],
) -> Iterator[tuple[int, int, int, Cell]]:
    """``(stream index, cell, length, the cell)`` of every cell of every stream, in order."""
    for k, (_, _, _, _, todo) in enumerate(streams):
        for c in todo:
            yield k, c.number, c.size, c


_ZEROS: dict[int, bytearray] = {}


def _zeros(length: int) -> bytearray:
    """``length`` zero bytes, made once per length (a bytearray on the left of ``==`` compares
    with memcmp, as in blockio.DirectWriter.matches)."""
    z = _ZEROS.get(length)
    if z is None:
        z = _ZEROS[length] = bytearray(length)
    return z


def _records(maps: StreamReader) -> Iterable[tuple[int, Record]]:
    for cell in range(maps.stream.cells):
        yield cell, maps.record(cell)


def _read(reader: blockio.DirectReader, target: str, offset: int, length: int) -> memoryview:
    try:
        return reader.read(offset, length)
    except OSError as e:
        raise DeviceError(
            f"cannot read {target} at byte {offset} to compare it: {e.strerror}; plan again "
            "with --full to write every byte"
        ) from e


T = TypeVar("T")


def _collect(
    streams: list[tuple[int, int]],
    wanted: Iterable[tuple[int, int, int, T]],
    same: Callable[[tuple[int, int, int, T]], bool],
    cancel: CancelToken,
) -> list[StreamDelta]:
    """Compare ``(stream index, cell, length, what)`` items on :data:`MEASURE_WORKERS`
    threads: one :class:`StreamDelta` per ``(cells, size)`` of ``streams``."""
    flags = [bytearray(ncells) for ncells, _ in streams]
    matching = [0] * len(streams)
    writing = [0] * len(streams)
    with closing(in_order(same, wanted, MEASURE_WORKERS, "delta", cancel)) as done:
        for (k, cell, length, _), equal in done:
            if equal:
                flags[k][cell] = MATCH
                matching[k] += length
            else:
                flags[k][cell] = WRITE
                writing[k] += length
    return [
        StreamDelta(bytes(f), m, w, size)
        for f, m, w, (_, size) in zip(flags, matching, writing, streams, strict=True)
    ]
