"""``extract`` from a file image: plain paths (``/Users/alice/Documents``) copied out of its
tree (docs/FORMAT.md, "File images"), with no mount and no root needed.

Called through :mod:`recovery.engine.api` (``extract_plan``/``extract_run`` pick this module
for a file image). Each PATH lands at DIR/<its last name> (``/`` puts the whole tree into DIR).
Kept: contents (every chunk checked against its hash), mode, owner (when running as root),
times (ns), symlink targets, hard links within what is copied, extended attributes where the
target takes them. A file whose chunks are damaged or missing is reported, its partial copy
removed, and the rest is copied.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from recovery.core.units import human_size
from recovery.engine.extract import ExtractPlan, ExtractResult, check_destination
from recovery.engine.progress import CancelToken, Progress
from recovery.errors import RecoveryError, UsageError
from recovery.repository import filetree
from recovery.repository.filetree import Entry
from recovery.repository.store import Repository, check_name


@dataclass
class FileExtractPlan(ExtractPlan):
    """An :class:`ExtractPlan` whose ``items`` stay empty: ``paths`` are paths in the tree."""

    paths: list[bytes] = field(default_factory=list)
    body: dict[str, object] = field(default_factory=dict)

    def describe(self) -> list[str]:
        lines = [f"Copy from file image '{self.image}' in {self.repo} to {self.to}:"]
        for p in self.paths:
            name = os.fsdecode(p.rpartition(b"/")[2]) if p else ""
            lines.append(f"  /{os.fsdecode(p)} -> {os.path.join(self.to, name)}")
        return lines


def plan_file_extract(
    repo: Repository,
    image: str,
    body: dict[str, object],
    paths: list[str],
    to: str,
    overwrite: bool,
) -> FileExtractPlan:
    check_name(image)
    if not paths:
        raise UsageError("name what to copy: a path in the image, e.g. /Users/alice/Documents")
    dest = check_destination(to, repo, repo.location)
    wanted = [os.fsencode(p.strip().strip("/")) for p in paths]
    names: set[bytes] = set()
    for w in wanted:
        name = w.rpartition(b"/")[2]
        if name in names:
            raise UsageError(f"two paths would both be copied to {dest}/{os.fsdecode(name)}")
        names.add(name)
    # Every path must be in the tree: read it once now (nothing is copied yet).
    present = set(wanted) - {b""}
    for e in filetree.read_tree(repo, body, repo.manifest_where(image)):
        present.discard(e.path)
        if not present:
            break
    if present:
        missing = ", ".join("/" + os.fsdecode(p) for p in sorted(present))
        raise UsageError(f"image '{image}' holds no {missing}")
    return FileExtractPlan(repo.location, image, dest, [], overwrite, paths=wanted, body=dict(body))


class ChunkCache:
    """The last few content chunks: a pack serves many small files in a row."""

    def __init__(self, repo: Repository, where: str, keep: int = 8) -> None:
        self.repo = repo
        self.where = where
        self.keep = keep
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, digest: bytes) -> bytes:
        data = self._chunks.get(digest)
        if data is None:
            data = self.repo.get_chunk(digest, f"{self.where}: content")
            self._chunks[digest] = data
            if len(self._chunks) > self.keep:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(digest)
        return data


def _selected(path: bytes, wanted: list[bytes]) -> bytes | None:
    """The destination-relative path of ``path`` when one of ``wanted`` holds it."""
    for w in wanted:
        if not w:
            return path
        if path == w or path.startswith(w + b"/"):
            base = w.rpartition(b"/")[0]
            return path[len(base) + 1 :] if base else path
    return None


def _note(result: ExtractResult, note: str) -> None:
    if note not in result.notes:
        result.notes.append(note)


def _attributes(e: Entry, d: bytes, result: ExtractResult) -> None:
    link = e.type == filetree.SYMLINK
    for name, value in e.xattrs:
        try:
            os.setxattr(d, name, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP, errno.EACCES):
                raise
            _note(result, "extended attributes: the target does not take them (not kept)")
    try:
        os.chown(d, e.uid, e.gid, follow_symlinks=False)
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        _note(result, "owners: the target does not take them (not kept)")
    if not link:
        os.chmod(d, stat.S_IMODE(e.mode))
    os.utime(d, ns=(e.atime_ns, e.mtime_ns), follow_symlinks=False)


def run_file_extract(
    repo: Repository, plan: FileExtractPlan, progress: Progress, cancel: CancelToken
) -> ExtractResult:
    started = time.monotonic()
    where = repo.manifest_where(plan.image)
    result = ExtractResult(plan.image, plan.to)
    dest_root = os.fsencode(plan.to)
    os.makedirs(dest_root, exist_ok=True)
    chunks = ChunkCache(repo, where)
    folders: list[tuple[Entry, bytes]] = []
    done: dict[bytes, bytes] = {}
    """image path of each regular file copied -> where it went (for hard links)."""
    contents: dict[bytes, Entry] = {}
    progress.step(f"copying from {plan.image}", int(str(plan.body.get("file_bytes", 0)) or 0))
    for e in filetree.read_tree(repo, plan.body, where):
        cancel.check()
        if e.type == filetree.REGULAR:
            contents[e.path] = e
        rel = _selected(e.path, plan.paths)
        if rel is None:
            continue
        d = os.path.join(dest_root, rel)
        label = "/" + os.fsdecode(e.path)
        if os.path.lexists(d) and not (e.type == filetree.FOLDER and os.path.isdir(d)):
            if not plan.overwrite:
                result.problems.append(f"{os.fsdecode(d)} exists (give --overwrite to replace)")
                continue
            with contextlib.suppress(OSError):
                os.unlink(d)
        try:
            if e.type == filetree.FOLDER:
                os.makedirs(d, exist_ok=True)
                folders.append((e, d))
                result.folders += 1
                continue
            if e.type == filetree.SYMLINK:
                os.symlink(e.target, d)
                result.links += 1
            elif e.type == filetree.HARDLINK:
                first = done.get(e.target)
                if first is not None:
                    os.link(first, d)
                    result.links += 1
                    continue
                src = contents.get(e.target)
                if src is None:
                    result.problems.append(f"{label}: its hard link target is not in the image")
                    continue
                e = Entry(**{**src.__dict__, "path": e.path})
                _write_file(e, d, chunks, progress)
                result.files += 1
                result.bytes += e.size
            elif e.type == filetree.REGULAR:
                _write_file(e, d, chunks, progress)
                done[e.path] = d
                result.files += 1
                result.bytes += e.size
            elif e.type == filetree.FIFO:
                os.mkfifo(d)
            elif e.type in (filetree.CHARDEV, filetree.BLOCKDEV):
                try:
                    os.mknod(d, e.mode, e.rdev)
                except PermissionError:
                    _note(result, "device nodes: need root (not copied)")
                    continue
            else:
                continue  # a socket is made by its program, never copied
            _attributes(e, d, result)
        except RecoveryError as err:
            result.problems.append(f"{label}: {err.message}")
        except OSError as err:
            result.problems.append(f"{label}: {err.strerror or err}")
    for e, d in reversed(folders):
        try:
            _attributes(e, d, result)
        except OSError as err:
            result.problems.append(f"/{os.fsdecode(e.path)}: {err.strerror}")
    result.seconds = time.monotonic() - started
    for p in plan.paths:
        result.copied.append(f"/{os.fsdecode(p)} -> {plan.to}")
    result.copied.append(
        f"{result.files} file(s), {human_size(result.bytes)}, {result.folders} folder(s)"
    )
    return result


def _write_file(e: Entry, d: bytes, chunks: ChunkCache, progress: Progress) -> None:
    fd = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for p in e.pieces:
            data = chunks.get(p.digest)
            if p.offset + p.length > len(data):
                raise RecoveryError(f"chunk {p.digest.hex()} is shorter than its piece")
            os.write(fd, memoryview(data)[p.offset : p.offset + p.length])
            progress.advance(p.length)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(d)
        raise
    os.close(fd)
