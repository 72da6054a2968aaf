"""A backup location in a folder of this machine (a USB disk, a partition, a mounted share).

The first :class:`~recovery.repository.backend.Backend`. Atomic writes go through
:func:`write_atomic` (the one place that writes a temporary name, renames it into place and, when
asked for durability, fsyncs file and directory); the lock is ``flock()`` on ``lock``, which dies
with its process, so a killed writer never leaves it held.

Durability limits: those of the file system underneath. On one without ordered metadata (FAT,
exFAT) a power cut can tear a rename; the format's hashes then report the torn file as damaged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from recovery.repository.backend import Backend, LockHeld, StoredFile

TMP = "tmp"

ROOT_ENTRIES = ("lost+found", "System Volume Information", "$RECYCLE.BIN", "$Recycle.Bin")
"""What file systems keep in their root (mkfs, Windows): a folder holding only these (and
``.Trash-UID`` folders of desktop trash cans) is as good as empty for a new repository."""


def _is_root_entry(name: str) -> bool:
    return name in ROOT_ENTRIES or name.startswith(".Trash-")


def fsync_directory(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    final: Path, data: bytes | bytearray | memoryview, tmp: Path, durable: bool
) -> None:
    """Write ``data`` to ``tmp``, rename it to ``final``; with ``durable``, fsync the file
    before the rename and the directory after it (borg's SaveFile). ``tmp`` is removed on any
    failure, so no half-written file is ever left under a final name."""
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, final)
        if durable:
            fsync_directory(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _syncfs(fd: int) -> None:
    """Flush every dirty page of the file system holding ``fd`` (one call, not one per file)."""
    import ctypes  # here: a file backup's start-up counts, and most commands never flush

    # The C library this process already runs on: ctypes.util.find_library would run
    # ``ldconfig -p`` to find it, on every flush.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class LocalFolder(Backend):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.location = str(self.root)
        self._made_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / name

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        # Sized by the file, not by ``length``: callers pass a chunk's largest possible size
        # (64 MiB), and a buffered read(64 MiB) of a 1 MiB chunk mapped, faulted and unmapped
        # that much for every chunk (reading the 840 chunk files of the reference disk's image:
        # 0.19-0.35 s of CPU, 0.10-0.12 s sized by fstat).
        fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            left = max(0, os.fstat(fd).st_size - offset)
            want = left if length is None else min(length, left)
            parts: list[bytes] = []
            while want > 0:
                part = os.pread(fd, want, offset)
                if not part:
                    break  # the file shrank meanwhile: short, as at its end
                parts.append(part)
                offset += len(part)
                want -= len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            os.close(fd)

    def read_into(self, name: str, buf: bytearray) -> int:
        fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size > len(buf):
                return size
            got = 0
            with memoryview(buf) as view:
                while got < size:
                    n = os.preadv(fd, [view[got:size]], got)
                    if n == 0:
                        return got  # the file shrank meanwhile: what is there
                    got += n
            return size
        finally:
            os.close(fd)

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = False) -> None:
        final = self._path(name)
        parent = name.rpartition("/")[0]
        if parent and parent not in self._made_dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            with self._dirs_lock:
                self._made_dirs.add(parent)
        tmpdir = self.root / TMP
        if TMP not in self._made_dirs:
            tmpdir.mkdir(exist_ok=True)
            with self._dirs_lock:
                self._made_dirs.add(TMP)
        tmp = tmpdir / f"{final.name}.{os.getpid()}.{threading.get_ident()}.new"
        write_atomic(final, data, tmp, durable)

    def flush(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def list(self, folder: str) -> Iterator[StoredFile]:
        base = self._path(folder) if folder else self.root
        stack = [(base, folder)]
        while stack:
            path, rel = stack.pop()
            try:
                entries = sorted(os.scandir(path), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                name = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), name))
                elif e.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        yield StoredFile(name, e.stat().st_size)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))

    def move(self, src: str, dst: str) -> None:
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self._path(src), target)
        fsync_directory(self._path(src).parent)
        if target.parent != self._path(src).parent:
            fsync_directory(target.parent)

    @contextlib.contextmanager
    def lock(self, note: str) -> Iterator[None]:
        path = self.root / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                raise LockHeld(os.pread(fd, 4096, 0).decode(errors="replace").strip()) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
            yield
        finally:
            os.close(fd)

    def exists(self) -> bool:
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", self.location)
        return self.root.is_dir()

    def is_empty(self) -> bool:
        return not self.exists() or all(_is_root_entry(p.name) for p in self.root.iterdir())

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def local_path(self) -> str | None:
        return str(self.root)
