"""Backup: a disk or some of its partitions into a repository (docs/FORMAT.md).

Called through :mod:`recovery.engine.api`. The hot path reads each cell's used pieces straight
into a buffer, and hashes, compresses and stores it in worker threads (BLAKE3 and zstd release
the GIL, so the cores work in parallel); a bounded window of cells in flight keeps memory flat
on any disk size. The manifest is written only after every chunk is durable.
"""

from __future__ import annotations

import os
import time
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from recovery.core.cells import Cell, cells
from recovery.devices import blockio
from recovery.engine.images import image_info
from recovery.engine.plans import BackupPlan, BackupResult, Question
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.reading import SourceReader, describe_unreadable
from recovery.engine.sources import (
    StreamPlan,
    plan_sources,
    resolve_sources,
    stream_extents,
    stream_zeroed,
)
from recovery.engine.workers import PIPELINE_WORKERS, in_order
from recovery.errors import RepositoryError, UsageError
from recovery.repository.images import commit_image
from recovery.repository.kinds import open_backend
from recovery.repository.maps import DATA, ZERO, MapWriter
from recovery.repository.store import Repository, check_name

# 4 MiB cells: each chunk is compressed on its own, and at zstd level 3 the images of the
# reference disk (PRODUCT.md) measured 805 MB with 1 MiB chunks, 787 MB with 2 MiB and 777 MB
# with 4 MiB, against 781 MB for partclone | zstd (bench/profile_engine.py --sizes). Larger cells
# also mean 4x fewer chunk files. The cost: a change dirties 4 MiB, not 1 MiB, for dedup.
CELL_SIZE = 4 << 20


def default_name(disk: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    return f"{os.path.basename(disk)}-{stamp}"


def plan_backup(
    sources: list[str],
    repo: str,
    name: str | None = None,
    level: int = 3,
    system: bool = False,
    keep_system_files: bool = False,
    encrypt: bool = False,
    force: bool = False,
) -> BackupPlan:
    """``force``: image partitions mounted read-write too (the image may be inconsistent)."""
    if not 1 <= level <= 19:
        raise UsageError("the compression level goes from 1 (fast) to 19 (small); 3 is usual")
    partitions = None
    if system:
        from recovery.engine.system import system_partitions

        partitions = system_partitions(sources)
    # The location is checked first: a location on the source disk is usually mounted
    # read-write there, and that refusal would not say what is really wrong.
    disk, _ = resolve_sources(sources)
    backend = open_backend(repo)
    local = backend.local_path()
    if local is not None and blockio.holds_path(disk, local):
        raise UsageError(
            f"the backup location {repo} is on {disk}, the disk being backed up: "
            "choose a location on another disk"
        )
    source = plan_sources(sources, partitions, keep_system_files, force)
    r = Repository.open(backend, create=True, encrypt=encrypt)
    name = check_name(name) if name else default_name(source.disk)
    if r.has_image(name):
        raise UsageError(f"an image named '{name}' already exists in {repo}: choose another name")
    notes = tuple(n for sp in source.streams for n in sp.notes)
    return BackupPlan(source, repo, name, level, notes)


def run_backup(
    plan: BackupPlan, progress: Progress, cancel: CancelToken, ask: Question | None = None
) -> BackupResult:
    """``ask`` is asked whether to go on when the source has many unreadable areas (None: go
    on without asking)."""
    started = time.monotonic()
    repo = Repository.open(plan.repo, create=True)
    with repo.locked(f"backup {plan.name}"):
        if repo.has_image(plan.name):
            raise UsageError(f"an image named '{plan.name}' already exists in {plan.repo}")
        fd = blockio.open_read(plan.source.disk)
        try:
            streams_json = []
            new_bytes = 0
            unreadable: list[list[Any]] = []
            bad_lines: list[str] = []
            for sp in plan.source.streams:
                cancel.check()
                desc = sp.manifest_fields()
                reader = SourceReader(
                    fd,
                    plan.source.disk,
                    sp.start,
                    CELL_SIZE,
                    ask=ask,
                    overlay=sp.overlay,
                    zeroed=stream_zeroed(sp, fd),
                )
                try:
                    written, mapinfo = _save_stream(
                        repo, reader, fd, sp, plan.level, progress, cancel
                    )
                finally:
                    reader.close()
                new_bytes += written
                desc.update(mapinfo)
                streams_json.append(desc)
                bad = reader.unreadable
                unreadable.extend([sp.id, off, length] for off, length in bad)
                if bad:
                    lines = describe_unreadable(plan.source.disk, sp, bad)
                    bad_lines.extend(lines)
                    for line in lines:
                        progress.log(line)
        finally:
            os.close(fd)
        progress.step("flushing the backup location", 0)
        body = commit_image(
            repo,
            plan.name,
            cell_size=CELL_SIZE,
            source={
                **plan.source.identity,
                "path": plan.source.disk,
                "size": plan.source.disk_size,
                "logical_sector_size": plan.source.sector_size,
            },
            table=plan.source.table.to_json() if plan.source.table else None,
            whole_disk=plan.source.whole_disk,
            streams=streams_json,
            unreadable=unreadable,
        )
    info = image_info(repo, plan.name, body)
    return BackupResult(info, new_bytes, time.monotonic() - started, plan.notes, tuple(bad_lines))


def _save_stream(
    repo: Repository,
    reader: SourceReader,
    fd: int,
    sp: StreamPlan,
    level: int,
    progress: Progress,
    cancel: CancelToken,
) -> tuple[int, dict[str, Any]]:
    label = (
        "partition table and gaps"
        if sp.id == "disk"
        else (f"partition {sp.number} ({sp.fstype or 'unknown'}, {sp.method})")
    )
    progress.step(f"saving {label}", sp.used_bytes)
    maps = MapWriter(repo, level)
    ncells = -(-sp.size // CELL_SIZE)
    next_cell = 0
    data_bytes = 0
    new_bytes = 0

    def work(cell: Cell) -> tuple[int, bytes, int]:
        buf = reader.read_cell(cell)
        digest = repo.hash(buf)
        # A zero cell is found by its hash (no second pass over the bytes).
        if digest == repo.zero_digest(cell.size):
            return ZERO, b"", 0
        return DATA, digest, repo.put_chunk(digest, buf, level)

    todo = cells(stream_extents(sp, fd), CELL_SIZE, sp.size)
    workers = max(PIPELINE_WORKERS, repo.backend.parallel_requests)  # network: more in flight
    with closing(in_order(work, todo, workers, "backup", cancel)) as done:
        for cell, (kind, digest, written) in done:
            while next_cell < cell.number:
                maps.add(0, min(CELL_SIZE, sp.size - next_cell * CELL_SIZE))
                next_cell += 1
            maps.add(kind, cell.size, digest if kind == DATA else bytes(32))
            next_cell += 1
            if kind == DATA:
                data_bytes += cell.size
            new_bytes += written
            progress.advance(cell.used)
    while next_cell < ncells:
        maps.add(0, min(CELL_SIZE, sp.size - next_cell * CELL_SIZE))
        next_cell += 1
    hashes = maps.finish()
    return new_bytes + maps.new_bytes, {
        "cells": ncells,
        "map": hashes,
        "data_bytes": data_bytes,
        "used_bytes": sp.used_bytes,
    }


__all__ = ["BackupPlan", "RepositoryError", "plan_backup", "run_backup"]
