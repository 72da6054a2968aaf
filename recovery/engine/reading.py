"""Reading a source disk that may be failing: the read path of backup and clone.

A cell's used pieces are read with ``preadv`` straight into its buffer: with O_DIRECT where
they are aligned (see :meth:`SourceReader.read_cell`), else through the page cache. When a read
fails with
an I/O error, the piece is read again in 64 KiB blocks, skipping the blocks that fail (the
first pass goes past the bad area quickly, as ddrescue does); then the failed blocks are gone
back to with O_DIRECT, page by page and then sector by sector, so only the sectors that really
fail are lost (through the page cache, one bad sector fails a whole cached folio, which can be
hundreds of KiB). What stays unreadable is left as zeros and recorded as a byte range of the
stream.

A source that disappears (unplugged, ENODEV/ENXIO, or its device node gone) is not a bad
sector: it ends the operation with a message that says so. So does a source that stops
answering while attached: when a whole cell fails, a sector that was read before is read
again; if that fails too, the disk is dead, not scratched. That check also comes before any
salvage: on a dead disk, going through a cell sector by sector would take hours.

After ``max_errors`` unreadable ranges, ``ask`` is called once with a question for the person;
if it answers False the operation stops (the repository stays valid).
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import mmap
import os
import threading
from collections.abc import Callable
from typing import NoReturn

from recovery.core.cells import Cell
from recovery.core.extents import merge
from recovery.core.overlay import Overlay
from recovery.devices import blockio
from recovery.errors import Cancelled, DeviceError
from recovery.filesystems.base import kind_of

FIRST_PASS = 64 << 10
PAGE = 4096
SECTOR = 512
GONE = {errno.ENODEV, errno.ENXIO, errno.ENOENT, errno.EBADF}
ALIGN = 4096
"""What O_DIRECT needs of the buffer's address, the offset and the length: a page, which covers
disks with 512-byte and with 4096-byte sectors alike."""
MERGE_GAP = 64 << 10
"""Used pieces of a cell closer than this are read as one request (the gap is zeroed after)."""


def _aligned_bytearray(size: int) -> bytearray | None:
    """A bytearray of ``size`` bytes whose data starts on an :data:`ALIGN` boundary (None if
    the interpreter would not give one). A bytearray, not an mmap: the callers compare it with
    memcmp (a bytearray on the left of ``==``), and deleting from its front only moves its
    start."""
    buf = bytearray(size + ALIGN)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))  # the export ends here
    del buf[: -address % ALIGN]
    del buf[size:]
    aligned = ctypes.addressof(ctypes.c_char.from_buffer(buf)) % ALIGN == 0
    return buf if aligned and len(buf) == size else None


def _runs(pieces: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """``pieces`` joined where less than :data:`MERGE_GAP` lies between them."""
    runs: list[tuple[int, int]] = []
    for off, length in pieces:
        if runs and off - (runs[-1][0] + runs[-1][1]) < MERGE_GAP:
            runs[-1] = (runs[-1][0], off + length - runs[-1][0])
        else:
            runs.append((off, length))
    return runs


_ZEROS: dict[int, bytes] = {}


def _zero_gaps(view: memoryview, pieces: tuple[tuple[int, int], ...]) -> None:
    """Zero every byte of ``view`` outside ``pieces`` (a reused buffer holds the last cell)."""
    zeros = _ZEROS.get(len(view))
    if zeros is None:
        zeros = _ZEROS[len(view)] = bytes(len(view))
    pos = 0
    for off, length in (*pieces, (len(view), 0)):
        if off > pos:
            view[pos:off] = zeros[: off - pos]
        pos = off + length


class SourceReader:
    """Reads cells of one stream of a source disk; thread-safe."""

    def __init__(
        self,
        fd: int,
        path: str,
        stream_start: int,
        cell_size: int,
        max_errors: int = 256,
        ask: Callable[[str], bool] | None = None,
        overlay: Overlay | None = None,
        zeroed: list[tuple[int, int]] | None = None,
    ) -> None:
        """``overlay``: bytes laid over what the stream's source holds (a replayed journal,
        engine/journal.py), offsets relative to the stream start. ``zeroed``: sorted, disjoint
        ranges (relative to the stream start) that are used but given as zeros, unread
        (:meth:`FileSystem.zeroed_extents`)."""
        self.overlay = overlay
        self._zeroed = sorted(zeroed or [])
        self._zeroed_starts = [start for start, _ in self._zeroed]
        self.fd = fd
        self.path = path
        self.stream_start = stream_start
        self.cell_size = cell_size
        self.max_errors = max_errors
        self.ask = ask
        self._lock = threading.Lock()
        self._bad: list[tuple[int, int]] = []
        self._asked = False
        self._local = threading.local()
        self._direct_fd = -1
        """O_DIRECT descriptor of the same file as ``fd``: for aligned reads of whole cells,
        and for salvaging a failed read sector by sector; -1 where O_DIRECT is refused."""
        try:
            flags = os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC
            self._direct_fd = os.open(f"/proc/self/fd/{fd}", flags)
        except OSError:
            pass  # a file system without O_DIRECT: every read goes through the cache
        self._fast = self._direct_fd >= 0 and stream_start % ALIGN == 0 and cell_size % ALIGN == 0
        self._last_good: int | None = None
        """Absolute offset of a sector read without error, for the liveness probe."""
        self._failure: DeviceError | None = None
        """Set once the source is found dead or gone: every thread's next read raises it, so
        the readers stop at once instead of each failing its way through a cell."""

    def close(self) -> None:
        if self._direct_fd >= 0:
            os.close(self._direct_fd)
            self._direct_fd = -1

    @property
    def unreadable(self) -> list[tuple[int, int]]:
        """Unreadable ``(offset, length)`` ranges relative to the stream start, merged."""
        with self._lock:
            return [tuple(e) for e in merge(sorted(self._bad))]  # type: ignore[misc]

    def read_cell(self, cell: Cell) -> bytearray:
        """The cell's bytes: its used pieces as the source holds them, zeros between them.

        A full cell is read into this thread's reused, page-aligned buffer (valid until the
        thread's next read_cell): pieces less than :data:`MERGE_GAP` apart as one request, with
        O_DIRECT where aligned. Through the page cache, a block device's bytes were copied twice
        (the loop or disk cache, then ours) and every cell was a new zeroed buffer: reading and
        hashing the bench's 3.3 GiB took 1.0 s of two cores warm, 0.55 s direct. It also keeps
        a whole disk's worth of reads from pushing the live system out of memory. A request
        that fails is read again piece by piece through the cache, as below."""
        self._stop_if_failed()
        buf = self._reused(cell)
        reused = buf is not None
        if buf is None:
            buf = bytearray(cell.size)
        view = memoryview(buf)
        cell_pos = cell.number * self.cell_size
        lost_before = self._lost()
        wanted = self._to_read(cell, cell_pos)
        pieces = wanted
        if reused:
            pieces = self._read_runs(view, cell_pos, pieces)
            _zero_gaps(view, wanted)
        for off, length in pieces:
            try:
                self._read_exact(view[off : off + length], self.stream_start + cell_pos + off)
                self._last_good = self.stream_start + cell_pos + off
            except OSError as e:
                self._gone_check(e)
                # A dead disk fails every read, and salvaging a cell sector by sector would
                # take hours there: first make sure the disk still reads what it read before.
                self._check_alive()
                self._salvage(view, off, length, cell_pos)
        if self._lost() - lost_before >= cell.used:
            self._check_alive()
        if self.overlay is not None:
            for off, length in wanted:
                self.overlay.patch(view[off : off + length], cell_pos + off)
        return buf

    def _to_read(self, cell: Cell, cell_pos: int) -> tuple[tuple[int, int], ...]:
        """The cell's used pieces less the zeroed ranges."""
        if not self._zeroed:
            return cell.pieces
        end = cell_pos + cell.size
        i = max(0, bisect.bisect_right(self._zeroed_starts, cell_pos) - 1)
        cuts = []
        while i < len(self._zeroed) and self._zeroed[i][0] < end:
            start, length = self._zeroed[i]
            if start + length > cell_pos:
                cuts.append((max(start, cell_pos) - cell_pos, min(start + length, end) - cell_pos))
            i += 1
        if not cuts:
            return cell.pieces
        out = []
        for off, length in cell.pieces:
            pos, stop = off, off + length
            for lo, hi in cuts:
                if hi <= pos or lo >= stop:
                    continue
                if lo > pos:
                    out.append((pos, lo - pos))
                pos = max(pos, hi)
            if pos < stop:
                out.append((pos, stop - pos))
        return tuple(out)

    def _reused(self, cell: Cell) -> bytearray | None:
        """This thread's aligned buffer, for a full cell when O_DIRECT is open; else None."""
        if not self._fast or cell.size != self.cell_size:
            return None
        if not hasattr(self._local, "buf"):  # None stays None: the interpreter gave no alignment
            self._local.buf = _aligned_bytearray(self.cell_size)
        buf: bytearray | None = self._local.buf
        return buf

    def _read_runs(
        self, view: memoryview, cell_pos: int, pieces: tuple[tuple[int, int], ...]
    ) -> tuple[tuple[int, int], ...]:
        """Read the cell's runs of pieces in one request each; the pieces still to read (of
        runs that failed, or are not aligned)."""
        left: list[tuple[int, int]] = []
        for off, length in _runs(pieces):
            pos = self.stream_start + cell_pos + off
            end = off + length
            ok = off % ALIGN == 0 and length % ALIGN == 0
            if ok:
                try:
                    ok = os.preadv(self._direct_fd, [view[off:end]], pos) == length
                except OSError:
                    ok = False
            if ok:
                self._last_good = pos
            else:
                left += [(o, n) for o, n in pieces if off <= o < end]
        return tuple(left)

    def _lost(self) -> int:
        with self._lock:
            return sum(n for _, n in self._bad)

    def _check_alive(self) -> None:
        """A read failed: read again a sector that read fine before; if it fails, stop. Before
        any read of this stream succeeded, that is the device's first sector, which making the
        plan read (the partition table, or the file system's boot sector)."""
        good = self._last_good if self._last_good is not None else 0
        aligned = good - good % SECTOR
        if not self._read_direct_ok(aligned, SECTOR, None):
            self._fail(
                DeviceError(
                    f"{self.path} stopped answering: sectors that read fine before now fail "
                    "too. The disk or its connection has died; reconnect it (another port or "
                    "cable) and run again"
                )
            )

    def _fail(self, error: DeviceError, cause: BaseException | None = None) -> NoReturn:
        with self._lock:
            if self._failure is None:
                self._failure = error
        raise error from cause

    def _stop_if_failed(self) -> None:
        failure = self._failure
        if failure is not None:
            raise DeviceError(str(failure))

    def _read_exact(self, view: memoryview, pos: int) -> None:
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], pos + done)
            if n <= 0:
                raise DeviceError(
                    f"{self.path} ended early at byte {pos + done}: was the disk removed?"
                )
            done += n

    def _gone_check(self, e: OSError) -> None:
        self._stop_if_failed()
        if e.errno in GONE or not blockio.is_block_device(self.path):
            self._fail(
                DeviceError(
                    f"{self.path} disappeared while it was being read ({e.strerror}): "
                    "reconnect it and run again"
                ),
                e,
            )
        if e.errno != errno.EIO:
            raise DeviceError(f"cannot read {self.path}: {e.strerror}") from e

    def _salvage(self, view: memoryview, off: int, length: int, cell_pos: int) -> None:
        """Read ``[off, off+length)`` of the cell in ever smaller blocks; zero what fails."""
        failed: list[tuple[int, int]] = []
        blocks = _blocks(off, length, FIRST_PASS)
        for start, size in blocks:
            if not self._try(view, start, size, cell_pos):
                failed.append((start, size))
        if len(failed) == len(blocks):
            self._check_alive()  # it may have died during the first pass
        for start, size in failed:
            for page_start, page_size in _blocks(start, size, PAGE):
                if self._try_direct(view, page_start, page_size, cell_pos):
                    continue
                for sec_start, sec_size in _blocks(page_start, page_size, SECTOR):
                    if not self._try_direct(view, sec_start, sec_size, cell_pos):
                        view[sec_start : sec_start + sec_size] = bytes(sec_size)
                        self._record(cell_pos + sec_start, sec_size)

    def _try(self, view: memoryview, start: int, size: int, cell_pos: int) -> bool:
        try:
            self._read_exact(view[start : start + size], self.stream_start + cell_pos + start)
            return True
        except OSError as e:
            self._gone_check(e)
            return False

    def _try_direct(self, view: memoryview, start: int, size: int, cell_pos: int) -> bool:
        return self._read_direct_ok(
            self.stream_start + cell_pos + start, size, view[start : start + size]
        )

    def _read_direct_ok(self, pos: int, size: int, into: memoryview | None) -> bool:
        """Read ``size`` bytes at ``pos`` bypassing the page cache (O_DIRECT, aligned buffer).

        Falls back to a cached read when the position is not sector-aligned or the device does
        not take O_DIRECT.
        """
        if pos % SECTOR or size % SECTOR:
            if into is None:
                return True
            return self._try_cached(into, pos)
        fd = self._direct_fd
        if fd < 0:
            return True if into is None else self._try_cached(into, pos)
        with mmap.mmap(-1, max(size, PAGE)) as buf:
            try:
                n = os.preadv(fd, [memoryview(buf)[:size]], pos)
            except OSError as e:
                self._gone_check(e)
                return False
            if n != size:
                return False
            if into is not None:
                into[:] = buf[:size]
        return True

    def _try_cached(self, into: memoryview, pos: int) -> bool:
        try:
            self._read_exact(into, pos)
            return True
        except OSError as e:
            self._gone_check(e)
            return False

    def _record(self, offset: int, length: int) -> None:
        with self._lock:
            self._bad.append((offset, length))
            count = len(self._bad)
            should_ask = count >= self.max_errors and not self._asked and self.ask is not None
            if should_ask:
                self._asked = True
        if should_ask and self.ask is not None:
            question = (
                f"{self.path} has {count} unreadable areas so far: the disk is failing. "
                "Go on reading what can be read?"
            )
            if not self.ask(question):
                raise Cancelled(
                    f"stopped: {self.path} has too many unreadable areas. Nothing was saved "
                    "from this run; the backup location is still valid"
                )


def _blocks(start: int, length: int, size: int) -> list[tuple[int, int]]:
    """``[start, start+length)`` cut at multiples of ``size`` (relative to the cell)."""
    out = []
    pos = start
    end = start + length
    while pos < end:
        nxt = min(end, (pos // size + 1) * size)
        out.append((pos, nxt - pos))
        pos = nxt
    return out


def describe_unreadable(disk: str, sp: object, ranges: list[tuple[int, int]]) -> list[str]:
    """Lines for the person: which byte ranges of which partition, and which files they hit."""
    from recovery.core.table import partition_node
    from recovery.core.units import human_size

    number = getattr(sp, "number", None)
    where = "the partition table area" if number is None else f"partition {number}"
    total = sum(n for _, n in ranges)
    shown = ", ".join(f"{o}-{o + n - 1}" for o, n in ranges[:10])
    more = f" and {len(ranges) - 10} more" if len(ranges) > 10 else ""
    lines = [
        f"unreadable: {human_size(total)} of {where} could not be read (bytes {shown}{more}); "
        "saved as zeros"
    ]
    fstype = getattr(sp, "fstype", None)
    block_size = getattr(sp, "block_size", None)
    files = None
    if number and block_size:
        files = kind_of(fstype).files_in(partition_node(disk, number), block_size, ranges)
    if files is not None:
        if files:
            lines.append(f"unreadable: files affected on {where}: " + ", ".join(files[:50]))
        else:
            lines.append(f"unreadable: no file on {where} uses those blocks (metadata or free)")
    return lines
