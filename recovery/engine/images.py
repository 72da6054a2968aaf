"""Images at a backup location: list them, verify them, remove them.

Called through :mod:`recovery.engine.api`. ``verify`` re-reads every map and every data chunk an
image refers to and reports every damaged place (stream and byte range), not only the first.
``remove`` is the repository's (docs/FORMAT.md, "Removing an image").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from recovery.engine.plans import ImageInfo, PartitionSummary, RemoveResult, VerifyResult
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.workers import WORKERS
from recovery.errors import IntegrityError, RecoveryError
from recovery.repository import filetree
from recovery.repository import images as repository_images
from recovery.repository.images import cell_size_of, stored_size, streams_of
from recovery.repository.maps import DATA, RECORDS_PER_MAP_CHUNK, StreamReader
from recovery.repository.store import Repository, check_name


def image_info(repo: Repository, name: str, body: dict[str, Any]) -> ImageInfo:
    where = repo.manifest_where(name)
    try:
        return _image_info(repo, name, body, where)
    except (TypeError, ValueError, AttributeError, OverflowError) as e:
        raise IntegrityError(f"{where}: the image description is damaged ({e})") from e


def _image_info(repo: Repository, name: str, body: dict[str, Any], where: str) -> ImageInfo:
    if filetree.is_file_image(body):
        return _file_image_info(repo, name, body, where)
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
        stored_size=stored_size(repo, streams),
        status="verified" if verified else "complete",
        verified_at=verified,
    )


def _file_image_info(repo: Repository, name: str, body: dict[str, Any], where: str) -> ImageInfo:
    sources = body.get("sources") or []
    seen: set[bytes] = set()
    stored = 0
    for d in filetree.referenced_chunks(repo, body, where):
        if d not in seen:
            seen.add(d)
            stored += repo.chunk_size(d) or 0
    verified = repo.verified_at(name)
    return ImageInfo(
        name=name,
        created=str(body.get("created", "")),
        source_path=", ".join(str(s.get("spec", "")) for s in sources if isinstance(s, dict)),
        source_model=None,
        source_serial=None,
        source_size=0,
        table=None,
        partitions=(),
        data_size=int(body.get("file_bytes", 0)),
        stored_size=stored,
        status="verified" if verified else "complete",
        verified_at=verified,
        kind="files",
        files=int(body.get("files", 0)),
    )


def _verify_file_image(
    repo: Repository, name: str, body: dict[str, Any], progress: Progress, cancel: CancelToken
) -> VerifyResult:
    """Every tree chunk parsed, every distinct content chunk read once and checked."""
    where = repo.manifest_where(name)
    problems: list[str] = []
    wanted: dict[bytes, int] = {}
    try:
        for e in filetree.read_tree(repo, body, where):
            for p in e.pieces:
                wanted[p.digest] = max(wanted.get(p.digest, 0), p.offset + p.length)
    except RecoveryError as e:
        problems.append(e.message)
    progress.step(f"verifying {name}", int(body.get("file_bytes", 0) or 0))
    checked = 0

    def check(digest: bytes, end: int) -> tuple[str | None, int]:
        try:
            data = repo.get_chunk(digest, f"{where}: content")
            if len(data) < end:
                return f"{where}: chunk {digest.hex()} is shorter than its pieces", 0
            return None, len(data)
        except RecoveryError as e:
            return e.message, 0

    workers = max(WORKERS, repo.backend.parallel_requests)
    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        for problem, n in pool.map(lambda kv: check(*kv), wanted.items()):
            cancel.check()
            checked += n
            progress.advance(n)
            if problem:
                problems.append(problem)
    problems = list(dict.fromkeys(problems))
    if not problems:
        repo.mark_verified(name)
    return VerifyResult(name, not problems, checked, tuple(problems))


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
    where = repo.manifest_where(name)
    body = repo.read_manifest(name)
    if filetree.is_file_image(body):
        return _verify_file_image(repo, name, body, progress, cancel)
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

    workers = max(WORKERS, repo.backend.parallel_requests)
    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
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
                if len(futures) > 4 * workers:
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
    return RemoveResult(name, repository_images.remove_image(repo, name))
