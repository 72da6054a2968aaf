"""Images as the format sees them: a manifest's streams, the chunks an image refers to, and
removal with its sweep (docs/FORMAT.md, "Manifests", "Removing an image").

Called by the engine's list/verify/restore/remove. Reads and deletes only through
:class:`~recovery.repository.store.Repository`, so it works on any storage backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from recovery import __version__
from recovery.errors import IntegrityError, UsageError
from recovery.repository import filetree
from recovery.repository.maps import DATA, RECORD, StreamInfo, StreamReader
from recovery.repository.store import Repository, check_name, utc_now


def not_a_file_image(body: dict[str, Any], where: str) -> None:
    """Refuse a file image where a disk image's streams are needed (restore, export, ...)."""
    if filetree.is_file_image(body):
        raise UsageError(
            f"{where} is a file image (saved files, not partitions): it cannot be restored onto "
            "a disk; copy its files out with 'recovery extract' or look at them with 'open'"
        )


def cell_size_of(body: dict[str, Any], where: str) -> int:
    not_a_file_image(body, where)
    cs = body.get("cell_size")
    if not isinstance(cs, int) or cs < 65536 or cs > 64 << 20 or cs & (cs - 1):
        raise IntegrityError(f"{where}: cell size {cs!r} is invalid")
    return cs


def streams_of(body: dict[str, Any], where: str) -> list[StreamInfo]:
    not_a_file_image(body, where)
    cs = cell_size_of(body, where)
    streams = body.get("streams")
    if not isinstance(streams, list) or not streams:
        raise IntegrityError(f"{where}: the image lists no streams")
    return [StreamInfo.from_manifest(s, cs, where) for s in streams]


def data_hashes(map_chunk: bytes) -> list[bytes]:
    """The hashes of the DATA cells one map chunk names."""
    return [digest for kind, _, digest in RECORD.iter_unpack(map_chunk) if kind == DATA]


def referenced_chunks(repo: Repository, streams: list[StreamInfo], image: str) -> Iterator[bytes]:
    """Every chunk the streams refer to, map chunks included (repeats possible)."""
    for s in streams:
        reader = StreamReader(repo, s, 1 << 20, image)
        for i, h in enumerate(s.map):
            yield h
            yield from data_hashes(reader.map_chunk(i))


def stored_size(repo: Repository, streams: list[StreamInfo]) -> int:
    """Compressed bytes of the distinct chunks an image refers to (maps included)."""
    seen: set[bytes] = set()
    total = 0
    for d in referenced_chunks(repo, streams, ""):
        if d in seen:
            continue
        seen.add(d)
        total += repo.chunk_size(d) or 0
    return total


def remove_image(repo: Repository, name: str) -> int:
    """Remove image ``name`` and delete the chunks no other image uses; the bytes freed.

    A removal interrupted after its manifest went is finished by running it again.
    """
    check_name(name)
    with repo.locked(f"remove {name}"):
        repo.retire_manifest(name)
        freed = collect_garbage(repo)
        repo.clear_removal_markers()
    return freed


def collect_garbage(repo: Repository) -> int:
    """Delete chunks no manifest refers to; the stored bytes freed. The caller holds the lock."""
    referenced: set[bytes] = set()
    for other in repo.image_names():
        body = repo.read_manifest(other)
        where = repo.manifest_where(other)
        if filetree.is_file_image(body):
            referenced.update(filetree.referenced_chunks(repo, body, where))
            continue
        referenced.update(referenced_chunks(repo, streams_of(body, where), other))
    freed = 0
    for digest, size in list(repo.iter_chunks()):
        if digest not in referenced:
            repo.delete_chunk(digest)
            freed += size
    return freed


def commit_image(
    repo: Repository,
    name: str,
    *,
    cell_size: int,
    source: dict[str, Any],
    table: dict[str, Any] | None,
    whole_disk: bool,
    streams: list[dict[str, Any]],
    unreadable: list[list[Any]],
) -> dict[str, Any]:
    """Steps 4 and 5 of the write ordering (FORMAT.md): make every chunk durable, then write
    the manifest that makes the image exist. Returns the manifest's body."""
    repo.flush()
    body: dict[str, Any] = {
        "name": name,
        "created": utc_now(),
        "tool": f"recovery {__version__}",
        "cell_size": cell_size,
        "source": source,
        "table": table,
        "whole_disk": whole_disk,
        "streams": streams,
        "unreadable": unreadable,
    }
    repo.write_manifest(name, body)
    return body
