"""Images at a backup location: list them, verify them, remove them.

Called through :mod:`recovery.engine.api`. ``verify`` re-reads every map and every data chunk an
image refers to and reports every damaged place (stream and byte range), not only the first.
``remove`` follows docs/FORMAT.md, "Removing an image": the manifest goes first, then the chunks
no remaining image refers to.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from recovery.engine.plans import ImageInfo, PartitionSummary, RemoveResult, VerifyResult
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.workers import WORKERS
from recovery.errors import IntegrityError, RecoveryError, RepositoryError
from recovery.repository.maps import (
    DATA,
    RECORD,
    RECORDS_PER_MAP_CHUNK,
    StreamInfo,
    StreamReader,
)
from recovery.repository.store import Repository, check_name


def cell_size_of(body: dict[str, Any], where: str) -> int:
    cs = body.get("cell_size")
    if not isinstance(cs, int) or cs < 65536 or cs > 64 << 20 or cs & (cs - 1):
        raise IntegrityError(f"{where}: cell size {cs!r} is invalid")
    return cs


def streams_of(body: dict[str, Any], where: str) -> list[StreamInfo]:
    cs = cell_size_of(body, where)
    streams = body.get("streams")
    if not isinstance(streams, list) or not streams:
        raise IntegrityError(f"{where}: the image lists no streams")
    return [StreamInfo.from_manifest(s, cs, where) for s in streams]


def image_info(repo: Repository, name: str, body: dict[str, Any]) -> ImageInfo:
    where = str(repo.manifest_path(name))
    try:
        return _image_info(repo, name, body, where)
    except (TypeError, ValueError, AttributeError, OverflowError) as e:
        raise IntegrityError(f"{where}: the image description is damaged ({e})") from e


def _image_info(repo: Repository, name: str, body: dict[str, Any], where: str) -> ImageInfo:
    streams = streams_of(body, where)
    src = body.get("source") or {}
    parts = []
    data = 0
    for s in streams:
        data += int(s.raw.get("data_bytes", 0))
        if s.id == "disk":
            continue
        parts.append(
            PartitionSummary(
                number=int(s.raw.get("number", 0)),
                start=int(s.raw.get("start", 0)),
                size=s.size,
                fstype=s.raw.get("fstype"),
                label=s.raw.get("label"),
                stored=int(s.raw.get("data_bytes", 0)),
            )
        )
    verified = repo.verified_at(name)
    table = body.get("table")
    return ImageInfo(
        name=name,
        created=str(body.get("created", "")),
        source_path=str(src.get("path", "")),
        source_model=src.get("model"),
        source_serial=src.get("serial"),
        source_size=int(src.get("size", 0)),
        table=table.get("label") if isinstance(table, dict) else None,
        partitions=tuple(parts),
        data_size=data,
        stored_size=_stored_size(repo, streams),
        status="verified" if verified else "complete",
        verified_at=verified,
    )


def _stored_size(repo: Repository, streams: list[StreamInfo]) -> int:
    """Compressed bytes of the distinct chunks an image refers to (maps included)."""
    seen: set[bytes] = set()
    total = 0
    for s in streams:
        reader = StreamReader(repo, s, 1 << 20, "")
        for i, h in enumerate(s.map):
            for d in (h, *_data_hashes(reader.map_chunk(i))):
                if d in seen:
                    continue
                seen.add(d)
                with contextlib.suppress(OSError):
                    total += os.stat(repo.chunk_path(d)).st_size
    return total


def _data_hashes(map_chunk: bytes) -> list[bytes]:
    return [digest for kind, _, digest in RECORD.iter_unpack(map_chunk) if kind == DATA]


def list_images(repo_path: str) -> list[ImageInfo]:
    repo = Repository.open(repo_path)
    out = []
    for name in repo.image_names():
        try:
            out.append(image_info(repo, name, repo.read_manifest(name)))
        except RecoveryError as e:
            out.append(
                ImageInfo(
                    name=name,
                    created="",
                    source_path="",
                    source_model=None,
                    source_serial=None,
                    source_size=0,
                    table=None,
                    partitions=(),
                    data_size=0,
                    stored_size=0,
                    status=f"damaged: {e.message}",
                )
            )
    return out


def verify_image(
    repo_path: str, name: str, progress: Progress, cancel: CancelToken
) -> VerifyResult:
    repo = Repository.open(repo_path)
    check_name(name)
    where = str(repo.manifest_path(name))
    body = repo.read_manifest(name)
    cs = cell_size_of(body, where)
    streams = streams_of(body, where)
    problems: list[str] = []
    checked = 0
    total = sum(int(s.raw.get("data_bytes", 0)) for s in streams)
    progress.step(f"verifying {name}", total)

    def check(reader: StreamReader, cell: int, digest: bytes, length: int) -> str | None:
        try:
            data = repo.get_chunk(digest, reader.where(cell))
            if len(data) != length:
                return f"{reader.where(cell)}: chunk length differs from the map"
        except RecoveryError as e:
            return e.message
        finally:
            progress.advance(length)
        return None

    with ThreadPoolExecutor(WORKERS, thread_name_prefix="verify") as pool:
        for s in streams:
            reader = StreamReader(repo, s, cs, name)
            futures = []
            cell = 0
            while cell < s.cells:
                cancel.check()
                try:
                    rec = reader.record(cell)
                except RecoveryError as e:
                    problems.append(e.message)
                    # The rest of this map chunk is unreadable too: go on with the next one.
                    cell = (cell // RECORDS_PER_MAP_CHUNK + 1) * RECORDS_PER_MAP_CHUNK
                    continue
                if rec.kind == DATA:
                    futures.append(pool.submit(check, reader, cell, rec.digest, rec.length))
                    checked += rec.length
                if len(futures) > 4 * WORKERS:
                    problems.extend(p for p in (f.result() for f in futures) if p)
                    futures = []
                cell += 1
            problems.extend(p for p in (f.result() for f in futures) if p)
    problems = list(dict.fromkeys(problems))
    if not problems:
        repo.mark_verified(name)
    return VerifyResult(name, not problems, checked, tuple(problems))


def remove_image(repo_path: str, name: str) -> RemoveResult:
    repo = Repository.open(repo_path)
    check_name(name)
    with repo.locked(f"remove {name}"):
        path = repo.manifest_path(name)
        removing = repo.path / "tmp" / f"{name}.image.removing"
        if not path.exists() and removing.exists():
            # A removal of this image was interrupted after its manifest went: finish the sweep.
            freed = collect_garbage(repo)
            with contextlib.suppress(OSError):
                removing.unlink()
            return RemoveResult(name, freed)
        if not path.exists():
            repo.read_manifest(name)  # raises ImageNotFound with the list of images
        try:
            os.rename(path, removing)
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise RepositoryError(f"cannot remove {path}: {e.strerror}") from e
        with contextlib.suppress(OSError):
            (repo.path / "images" / f"{name}.verified").unlink()
        freed = collect_garbage(repo)
        for f in (repo.path / "tmp").glob("*.removing"):
            with contextlib.suppress(OSError):
                f.unlink()
    return RemoveResult(name, freed)


def collect_garbage(repo: Repository) -> int:
    """Delete chunks no manifest refers to. The caller holds the lock."""
    referenced: set[bytes] = set()
    for other in repo.image_names():
        body = repo.read_manifest(other)
        where = str(repo.manifest_path(other))
        for s in streams_of(body, where):
            reader = StreamReader(repo, s, cell_size_of(body, where), other)
            for i, h in enumerate(s.map):
                referenced.add(h)
                referenced.update(_data_hashes(reader.map_chunk(i)))
    freed = 0
    for digest, path in repo.iter_chunks():
        if digest not in referenced:
            try:
                freed += path.stat().st_size
                path.unlink()
            except OSError as e:
                raise RepositoryError(f"cannot delete {path}: {e.strerror}") from e
    return freed
