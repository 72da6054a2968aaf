"""A storage backend in memory, for the repository's unit tests (not shipped).

It exists to prove the seam: the repository's format logic runs unchanged on a backend that is
not a folder, has no rename (like S3) and whose lock is a flag. If a format rule reached past the
backend to the local file system, the tests that run over this backend would fail.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Iterator

from recovery.repository.backend import Backend, LockHeld, StoredFile


class MemoryBackend(Backend):
    supports_move = False

    def __init__(self, location: str = "memory://test") -> None:
        self.location = location
        self.files: dict[str, bytes] = {}
        self.durable: set[str] = set()
        self.created = False
        self.full = False
        """Set to make every write fail as a full location does."""
        self._held: str | None = None
        self._mutex = threading.Lock()

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            data = self.files[name]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such file", name) from None
        return data[offset:] if length is None else data[offset : offset + length]

    def size(self, name: str) -> int | None:
        data = self.files.get(name)
        return None if data is None else len(data)

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = False) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        with self._mutex:
            self.files[name] = bytes(data)
            if durable:
                self.durable.add(name)

    def flush(self) -> None:
        with self._mutex:
            self.durable.update(self.files)

    def list(self, folder: str) -> Iterator[StoredFile]:
        prefix = f"{folder}/" if folder else ""
        with self._mutex:
            items = sorted(self.files.items())
        for name, data in items:
            if name.startswith(prefix):
                yield StoredFile(name, len(data))

    def delete(self, name: str) -> None:
        with self._mutex:
            self.files.pop(name, None)
            self.durable.discard(name)

    @contextlib.contextmanager
    def lock(self, note: str) -> Iterator[None]:
        with self._mutex:
            if self._held is not None:
                raise LockHeld(self._held)
            self._held = note
        try:
            yield
        finally:
            self._held = None

    def exists(self) -> bool:
        return self.created

    def is_empty(self) -> bool:
        return not self.files

    def create(self) -> None:
        self.created = True
