"""Restore: an image onto a disk, planned, checked, then written.

Called through :mod:`recovery.engine.api`. ``plan_restore`` reads only: it checks the safety
rules (the target is a whole disk, nothing on it is mounted, it does not hold the backup
location, the image fits) and lays the partitions out on the target (core.table.plan_layout).
``run_restore`` first checks every map and every chunk header the plan needs, so a damaged image
stops the restore before a byte is written; then, holding the disk O_EXCL and flock'ed, writes
the table and partition data, checking each chunk's hash before writing it; then tells the
kernel (BLKPG), recreates swap, grows the main file system and checks every file system.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import replace
from typing import Any

from recovery.core.layout import fits_unchanged
from recovery.core.table import Move, Table, plan_layout
from recovery.core.units import human_size
from recovery.devices import blockio
from recovery.devices.partitions import (
    kernel_has,
    read_table,
    refresh_udev,
    tell_kernel,
    write_table,
)
from recovery.devices.tools import require
from recovery.engine.bootentry import add_entry, plan_offer
from recovery.engine.delta import (
    EXT_FSTYPES,
    Delta,
    cover_overwritten,
    hold_superblock,
    measure_restore,
    same_table,
)
from recovery.engine.finish import Written, finish, finish_needs
from recovery.engine.plans import PartitionWrite, RestorePlan, RestoreResult, image_notes
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.shrink import minimum_of_stream, plan_shrink, shrink_partition
from recovery.engine.sources import layout_extents
from recovery.engine.targets import Target, check_still_same, check_target
from recovery.engine.workers import PIPELINE_WORKERS, WORKERS, in_order
from recovery.errors import IntegrityError, Refused, UsageError
from recovery.filesystems.base import growable_numbers
from recovery.repository.images import cell_size_of, streams_of
from recovery.repository.maps import DATA, ZERO, StreamInfo, StreamReader
from recovery.repository.store import Repository, check_name


def plan_restore(
    repo_path: str,
    image: str,
    target: str,
    partitions: list[int] | None = None,
    full: bool = False,
    boot_entry: bool = True,
) -> RestorePlan:
    """``full``: write every cell even when the target already holds some (engine/delta.py);
    ``boot_entry``: offer a UEFI boot entry when one is missing (engine/bootentry.py)."""
    try:
        plan = _plan_restore(repo_path, image, target, partitions)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
        # Only a manifest whose fields have impossible types or values gets here.
        raise IntegrityError(
            f"image {image}: its description is damaged ({e!r}); nothing was written"
        ) from e
    require(finish_needs(((w.fstype, w.grows) for w in plan.writes), plan.layout is not None))
    if not full:
        plan = _with_delta(plan)
    table = plan.layout.table if plan.layout is not None else None
    offer, note = plan_offer(table, boot_entry)
    if offer is not None or note is not None:
        plan = replace(plan, boot_entry=offer, notes=plan.notes + ((note,) if note else ()))
    return plan


def _with_delta(plan: RestorePlan) -> RestorePlan:
    """The plan with what its target already holds measured, when it has the very table the
    plan writes (an earlier restore of the same disk); unchanged otherwise."""
    if plan.layout is None or not same_table(plan.target, plan.layout.table):
        return plan
    # A partition resized after writing (grown or shrunk) is written whole.
    placed = [(w.stream, w.target_start) for w in plan.writes if not (w.grows or w.shrinks)]
    kept: dict[str, list[tuple[int, int]]] = {}
    if plan.layout.same_geometry and plan.disk_stream is not None:
        placed.append((plan.disk_stream, 0))
        kept[plan.disk_stream.id] = layout_extents(plan.layout.table, plan.disk_stream.size)
    repo = Repository.open(plan.repo)
    delta = measure_restore(repo, plan.image, plan.cell_size, plan.target, placed, kept)
    if plan.disk_stream is not None:
        over = {w.stream.id: w.target_start for w in plan.writes}
        delta = cover_overwritten(delta, plan.disk_stream.id, 0, plan.cell_size, over)
    return replace(plan, delta=delta)


def _plan_restore(
    repo_path: str, image: str, target: str, partitions: list[int] | None
) -> RestorePlan:
    repo = Repository.open(repo_path)
    check_name(image)
    body = repo.read_manifest(image)
    where = repo.manifest_where(image)
    cell_size = cell_size_of(body, where)
    streams = streams_of(body, where)

    tgt = check_target(target)
    local = repo.local_path()
    if local is not None and blockio.holds_path(target, local):
        raise Refused(
            f"the backup location {repo_path} is on {target}: restoring there would "
            "destroy the image; choose another disk; nothing was written"
        )
    target_size, sector = tgt.size, tgt.sector_size
    src = body.get("source") or {}
    source_size = int(src.get("size", 0))
    table_json = body.get("table")
    table = Table.from_json(table_json) if isinstance(table_json, dict) else None
    if table is not None and table.sector_size != sector:
        raise Refused(
            f"the image was taken from a disk with {table.sector_size}-byte sectors and "
            f"{target} has {sector}-byte sectors: restore to a disk with the same "
            "sector size"
        )
    by_id = {s.id: s for s in streams}
    part_streams = [s for s in streams if s.id != "disk"]

    if partitions is not None:
        return _plan_partitions(
            repo_path,
            image,
            tgt,
            body,
            part_streams,
            cell_size,
            partitions,
        )

    if table is None:
        # A disk without a table: one stream over the whole disk.
        (s,) = part_streams
        if target_size < s.size:
            raise Refused(
                f"{target} is too small: the image needs {s.size} bytes "
                f"({human_size(s.size)}), the disk has {human_size(target_size)}"
            )
        whole = (PartitionWrite(s, 0, 0, s.size, s.size, s.raw.get("fstype")),)
        return RestorePlan.without_table(repo_path, image, tgt, body, whole, cell_size)

    fstypes = {int(s.raw["number"]): s.raw.get("fstype") for s in part_streams}
    if fits_unchanged(table, target_size):
        layout = plan_layout(table, source_size, target_size, growable_numbers(fstypes))
    else:
        layout = plan_shrink(table, tgt, fstypes, _minimum_in_image(repo, image, by_id, cell_size))
    disk = by_id.get("disk")
    if layout.same_geometry and disk is not None and disk.size > target_size:
        raise IntegrityError(f"image {image}: its layout stream is larger than the disk it says")
    writes: list[PartitionWrite] = []
    for m in layout.moves:
        found = by_id.get(f"p{m.number}")
        if found is None:
            continue  # partition not in a partial image: created empty
        if found.size > m.new_size and m.number != layout.shrunk:
            raise IntegrityError(
                f"image {image}: partition {m.number} holds {found.size} bytes but its table "
                f"entry has room for {m.new_size}: the image is damaged; nothing was written"
            )
        writes.append(
            PartitionWrite(
                found, m.number, m.new_start, m.new_size, m.old_size, found.raw.get("fstype")
            )
        )
    notes = list(image_notes(body))
    if not body.get("whole_disk", True):
        missing = [m.number for m in layout.moves if f"p{m.number}" not in by_id]
        if missing:
            notes.append(
                "the image holds only some partitions; partitions "
                f"{', '.join(map(str, missing))} are created empty"
            )
    return RestorePlan(
        repo_path,
        image,
        tgt,
        body,
        layout,
        tuple(writes),
        by_id.get("disk"),
        cell_size,
        tuple(notes),
    )


def _minimum_in_image(
    repo: Repository, image: str, by_id: dict[str, StreamInfo], cell_size: int
) -> Callable[[int], int]:
    """How small partition N's file system can get, asked of its tool over the image."""

    def minimum(number: int) -> int:
        s = by_id.get(f"p{number}")
        if s is None:
            return 0  # not in a partial image: created empty
        reader = StreamReader(repo, s, cell_size, image)
        return minimum_of_stream(s.raw.get("fstype"), s.size, reader.pread)

    return minimum


def _plan_partitions(
    repo_path: str,
    image: str,
    tgt: Target,
    body: dict[str, Any],
    part_streams: list[StreamInfo],
    cell_size: int,
    numbers: list[int],
) -> RestorePlan:
    target = tgt.path
    current = read_table(target)
    if current is None:
        raise Refused(
            f"{target} has no partition table: restore the whole image first, or "
            "without --partitions"
        )
    by_number = {int(s.raw["number"]): s for s in part_streams}
    writes: list[PartitionWrite] = []
    for n in numbers:
        s = by_number.get(n)
        if s is None:
            raise UsageError(
                f"image '{image}' has no partition {n} "
                f"(it has {', '.join(map(str, sorted(by_number)))})"
            )
        try:
            e = current.entry(n)
        except KeyError:
            raise Refused(
                f"{target} has no partition {n}: restore the whole image, or create "
                "the partition first"
            ) from None
        size = e.size * current.sector_size
        if size < s.size:
            raise Refused(
                f"partition {n} of {target} is too small: {human_size(size)}, the "
                f"image's partition {n} needs {human_size(s.size)}"
            )
        writes.append(
            PartitionWrite(s, n, e.start * current.sector_size, size, s.size, s.raw.get("fstype"))
        )
    return RestorePlan.without_table(repo_path, image, tgt, body, tuple(writes), cell_size)


DELTA_BLOCK = 64 << 10
"""A cell that a delta restore writes is compared with the target again in pieces of this size
and only the pieces that differ are written (engine/delta.py measures whole cells). On the
benchmark disk (3 % changed) this writes 72 MiB instead of the 304 MiB of the 76 cells that
differ, for one more read of those cells (less to copy into the device, less to flush)."""

CHECKED_KEEP = 128 << 20
"""Bytes of authenticated chunk files the check pass keeps for the writing pass from a location
that is not on this machine (about 30 of the 4 MiB cells of an image that compresses 4:1 are
then not transferred a second time). From a local folder nothing is kept
(:meth:`Repository.authenticate_chunk_file`): reading again from the page cache costs less."""


class CheckedChunks:
    """Chunk files the check pass read and authenticated, kept up to a byte budget in the order
    the writing pass needs them; each is handed out once (a repeat is read again)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._kept: dict[bytes, bytes] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def offer(self, digest: bytes, blob: bytes) -> None:
        with self._lock:
            if self._bytes + len(blob) <= self._budget and digest not in self._kept:
                self._kept[digest] = blob
                self._bytes += len(blob)

    def take(self, digest: bytes) -> bytes | None:
        with self._lock:
            blob = self._kept.pop(digest, None)
            if blob is not None:
                self._bytes -= len(blob)
            return blob


def _preflight(
    repo: Repository, plan: RestorePlan, progress: Progress, cancel: CancelToken
) -> CheckedChunks:
    """Check the image before anything is written (docs/FORMAT.md, "Damage and how it is
    detected"): every map, and every chunk the plan needs. In an encrypted location each chunk
    file is read and authenticated whole (its AES-GCM tag: about 10 GB/s of one core, no
    decompression), so a damaged chunk anywhere stops the restore with the target untouched;
    from a network location, what fits in :data:`CHECKED_KEEP` is kept for the writing pass,
    in the order it writes.
    In a plain location only each chunk file's presence and header are checked here (a full
    check would decompress and hash the image twice); its content is checked as it is written.
    """
    streams = [w.stream for w in plan.writes]
    if plan.disk_stream is not None:
        streams.insert(0, plan.disk_stream)  # written first (_write_layout)
    whole = repo.authenticates_chunk_files
    total = sum(int(s.raw.get("data_bytes", 0)) for s in streams) if whole else 0
    progress.step("checking the image before writing", total)
    kept = CheckedChunks(CHECKED_KEEP if whole else 0)
    problems: list[str] = []

    def needed() -> Iterator[tuple[bytes, int, str]]:
        seen: set[bytes] = set()
        for s in streams:
            reader = StreamReader(repo, s, plan.cell_size, plan.image)
            for cell in range(s.cells):
                try:
                    rec = reader.record(cell)
                except IntegrityError as e:
                    problems.append(e.message)
                    return
                if rec.kind != DATA:
                    continue
                if plan.delta is not None and not plan.delta.writes(s.id, cell):
                    progress.advance(rec.length if whole else 0)
                    continue  # already on the target: neither read nor written
                if rec.digest in seen:
                    progress.advance(rec.length if whole else 0)
                    continue
                seen.add(rec.digest)
                yield rec.digest, rec.length, reader.where(cell)

    def check(item: tuple[bytes, int, str]) -> tuple[bytes | None, str | None]:
        digest, _, where = item
        try:
            if whole:
                return repo.authenticate_chunk_file(digest, where), None
            repo.check_chunk_header(digest, where)
        except IntegrityError as e:
            return None, e.message
        return None, None

    workers = max(WORKERS, repo.backend.parallel_requests)
    with closing(in_order(check, needed(), workers, "check", cancel)) as done:
        for (digest, length, _), (blob, problem) in done:
            if problem is not None:
                problems.append(problem)
                if len(problems) >= 5:
                    break
            elif blob is not None:
                kept.offer(digest, blob)
            if whole:
                progress.advance(length)
    if problems:
        raise IntegrityError(
            "the image is damaged, nothing was written: "
            + "; ".join(problems)
            + " (run 'recovery verify' for the full list)"
        )
    return kept


def run_restore(plan: RestorePlan, progress: Progress, cancel: CancelToken) -> RestoreResult:
    started = time.monotonic()
    repo = Repository.open(plan.repo)
    kept = _preflight(repo, plan, progress, cancel)
    cancel.check()
    written = 0
    found = [0]  # bytes of differing cells that were there already (DELTA_BLOCK pieces)
    told = False
    fd = blockio.open_exclusive_write(plan.target)
    try:
        with blockio.disk_lock(fd):
            check_still_same(plan.target_info, fd)
            if plan.layout is not None and plan.disk_stream is not None:
                written += _write_layout(repo, fd, plan, progress, cancel, kept)
            # O_DIRECT: restoring 3.4 GB measured 8.8-9.4 s against 10.3-19.5 s through the
            # page cache (the loop device's cache and its backing file's both filled).
            writer = blockio.DirectWriter(plan.target, fd)
            try:
                for w in plan.writes:
                    cancel.check()
                    written += _write_stream(
                        repo, fd, plan, w, progress, cancel, writer, kept, found
                    )
            finally:
                if writer is not None:
                    writer.close()
            for w in plan.writes:
                if w.shrinks:  # its front is written; the rest comes from the image
                    tail = StreamReader(repo, w.stream, plan.cell_size, plan.image)
                    shrink_partition(
                        fd, plan.target, w.number, w.fstype, w.target_start, w.target_size,
                        w.source_size, tail.pread, progress,
                    )  # fmt: skip
            blockio.flush(fd, plan.target)
            # A delta restore keeps the very table the disk has; when the kernel already has
            # its partitions, deleting and adding them again only sets udev probing them.
            if plan.layout is not None and not (
                plan.delta is not None and kernel_has(plan.target, plan.layout.table)
            ):
                tell_kernel(plan.target)
                told = True
    except IntegrityError as e:
        raise IntegrityError(
            f"{e.message}; the restore stopped before writing damaged data, and {plan.target} "
            "is incomplete: restore another image of this disk"
        ) from e
    finally:
        os.close(fd)
    if told or plan.layout is None:
        # New partition nodes settle before they are finished; finish() refreshes udev
        # again at its end, which is all a table the kernel already had needs.
        refresh_udev(plan.target)
    checks = _after_write(plan, progress)
    ok = all(not c.startswith("FAILED") for c in checks)
    if plan.boot_entry is not None:
        checks.append(add_entry(plan.target, plan.boot_entry))
    return RestoreResult(
        plan.image,
        plan.target,
        written,
        time.monotonic() - started,
        tuple(checks),
        ok,
        plan.delta.matching_bytes + found[0] if plan.delta is not None else 0,
    )


def _write_layout(
    repo: Repository,
    fd: int,
    plan: RestorePlan,
    progress: Progress,
    cancel: CancelToken,
    kept: CheckedChunks,
) -> int:
    assert plan.layout is not None and plan.disk_stream is not None
    reader = StreamReader(repo, plan.disk_stream, plan.cell_size, plan.image)
    progress.step("writing the partition table and boot area", 0)
    if plan.layout.same_geometry:
        # Same disk size, same places: the saved table, boot code and gaps go back byte for byte.
        size = plan.disk_stream.size
        return _write_cells(
            reader, fd, 0, size, plan.cell_size, progress, cancel, None, kept, plan.delta
        )
    first = min((m.new_start for m in plan.layout.moves), default=plan.disk_stream.size)
    head = reader.pread(0, first)
    blockio.pwrite_all(fd, head, 0)
    write_table(fd, plan.target, plan.layout.table)
    # sfdisk writes the table but not the boot code before it (MBR bytes 0-439).
    blockio.pwrite_all(fd, head[:440], 0)
    return len(head)


def _write_stream(
    repo: Repository,
    fd: int,
    plan: RestorePlan,
    w: PartitionWrite,
    progress: Progress,
    cancel: CancelToken,
    writer: blockio.DirectWriter | None = None,
    kept: CheckedChunks | None = None,
    found: list[int] | None = None,
) -> int:
    reader = StreamReader(repo, w.stream, plan.cell_size, plan.image)
    total = int(w.stream.raw.get("data_bytes", 0))
    measured = plan.delta.streams.get(w.stream.id) if plan.delta is not None else None
    if measured is not None:
        total = measured.writing
    progress.step(f"restoring partition {w.number} ({w.fstype or 'unknown'})", total)
    return _write_cells(
        reader,
        fd,
        w.target_start,
        min(w.stream.size, w.target_size),
        plan.cell_size,
        progress,
        cancel,
        writer,
        kept,
        plan.delta,
        found,
        superblock_last=w.fstype in EXT_FSTYPES,
    )


def _write_cells(
    reader: StreamReader,
    fd: int,
    base: int,
    size: int,
    cell_size: int,
    progress: Progress,
    cancel: CancelToken,
    writer: blockio.DirectWriter | None = None,
    kept: CheckedChunks | None = None,
    delta: Delta | None = None,
    found: list[int] | None = None,
    superblock_last: bool = False,
) -> int:
    """Write every DATA and ZERO cell of a stream at ``base``; DATA is hash-checked first.

    Only the stream's first ``size`` bytes are written (a partition shrunk onto a smaller disk
    gets its front here; docs/SHRINK.md). With a ``delta``, only the cells it says differ on
    the target, and of those only the :data:`DELTA_BLOCK` pieces that differ; ``found[0]``
    grows by the bytes of those cells that were already there. ``superblock_last`` (an ext
    partition): its primary superblock is overwritten before anything else and its first cell
    written after everything else (engine/delta.py's ``hold_superblock``). The bytes written."""
    written = 0
    repo = reader.repo
    sid = reader.stream.id
    measured = delta is not None and sid in delta.streams
    held = superblock_last and reader.stream.cells > 0 and size > 0
    if held and delta is not None and delta.untouched(sid):
        held = False  # nothing is written into it
    if held:
        hold_superblock(fd, base)

    def fetch_and_write(item: tuple[int, bytes, int]) -> tuple[int, int]:
        cell, digest, length = item
        where = reader.where(cell)
        stored = kept.take(digest) if kept is not None else None
        data = repo.get_chunk(digest, where, stored)
        if len(data) != length:
            raise IntegrityError(
                f"{reader.where(cell)}: chunk length differs from the map; the target is incomplete"
            )
        data = data[: size - cell * cell_size]
        wrote = len(data)
        try:
            if writer is not None and measured:
                # The plan found this cell different, not where: a few changed files touch a
                # few blocks of it, so only the blocks that differ are written.
                wrote = writer.write_changed(data, base + cell * cell_size, DELTA_BLOCK)
            elif writer is not None:
                writer.write(data, base + cell * cell_size)
            else:
                blockio.pwrite_all(fd, data, base + cell * cell_size)
        except OSError as e:
            raise blockio.write_failed(fd, base + cell * cell_size, e) from e
        progress.advance(len(data))
        return len(data), wrote

    zero_start = zero_len = 0

    def data_cells() -> Iterator[tuple[int, bytes, int]]:
        """The DATA cells to fetch and write; ZERO cells are zeroed here, runs merged."""
        nonlocal zero_start, zero_len
        for cell in range(min(reader.stream.cells, -(-size // cell_size))):
            if held and cell == 0:
                continue
            if delta is not None and not delta.writes(sid, cell):
                continue
            rec = reader.record(cell)
            if rec.kind == ZERO:
                pos = base + cell * cell_size
                length = min(rec.length, size - cell * cell_size)
                if zero_len and zero_start + zero_len == pos:
                    zero_len += length
                else:
                    blockio.zero_range(fd, zero_start, zero_len)
                    zero_start, zero_len = pos, length
            elif rec.kind == DATA:
                yield cell, rec.digest, rec.length

    workers = max(PIPELINE_WORKERS, reader.repo.backend.parallel_requests)
    with closing(in_order(fetch_and_write, data_cells(), workers, "restore", cancel)) as done:
        for _, (length, wrote) in done:
            written += wrote
            if found is not None:
                found[0] += length - wrote
    blockio.zero_range(fd, zero_start, zero_len)
    if held:
        # Everything else is on the device before the cell that makes it a file system again.
        blockio.flush(fd, "the target")
        rec = reader.record(0)
        if rec.kind == DATA:
            length, wrote = fetch_and_write((0, rec.digest, rec.length))
            written += wrote
        else:
            blockio.zero_range(fd, base, min(rec.length, size))
    return written


def _after_write(plan: RestorePlan, progress: Progress) -> list[str]:
    written = [
        Written(
            number=w.number,
            fstype=w.fstype,
            method=w.stream.method,
            grows=w.grows,
            uuid=w.stream.raw.get("uuid"),
            label=w.stream.raw.get("label"),
            old_start=int(w.stream.raw.get("start", 0)),
            new_start=w.target_start,
            unchanged=plan.delta is not None and plan.delta.untouched(w.stream.id),
        )
        for w in plan.writes
    ]
    return finish(plan.target, written, progress)


__all__ = ["Move", "RestorePlan", "RestoreResult", "plan_restore", "run_restore"]
