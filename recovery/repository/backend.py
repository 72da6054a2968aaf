"""The storage a repository lives on: a few operations on named files (docs/FORMAT.md,
"Storage operations the format relies on").

Called only by :mod:`recovery.repository`. A backend knows nothing of chunks, manifests or maps;
the format knows nothing of folders, sockets or buckets. Names are relative paths with ``/``
separators. Failures are ``OSError``s carrying an errno (``FileNotFoundError`` for a missing
name), which the repository turns into one line for the person: a backend raises no errors of
its own beyond :class:`LockHeld`.

:func:`recovery.repository.kinds.open_backend` picks the backend for an address.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

__all__ = ["Backend", "LockHeld", "StoredFile"]


@dataclass(frozen=True)
class StoredFile:
    name: str
    """Relative to the location's root, ``/``-separated."""
    size: int


class LockHeld(Exception):
    """Another writer holds the location's lock; ``holder`` is its note (may be empty)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class Backend(ABC):
    """One backup location's storage. Thread-safe: writes and reads come from worker threads."""

    location: str
    """How the person names this location, for messages (a folder path, an address)."""

    parallel_requests: int = 0
    """Requests to keep in flight so the location stays busy (a network round trip each); the
    engine runs at least this many worker threads. 0: CPU-bound, one thread per core is right."""

    supports_move: bool = True
    """Whether :meth:`move` is an atomic rename (the format falls back to write + delete)."""

    @abstractmethod
    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """The stored bytes of ``name`` from ``offset`` (all of them, or ``length``; short only
        at the end). ``FileNotFoundError`` when there is no such file."""

    def read_into(self, name: str, buf: bytearray) -> int:
        """Read all of ``name`` into the front of ``buf`` (a buffer its caller reuses, so
        reading many files allocates nothing per file); the file's size. When that is larger
        than ``buf``, what ``buf`` holds is undefined and the caller reads again with a larger
        one. ``FileNotFoundError`` as :meth:`read`. This default reads the whole file through
        :meth:`read` and copies it: no gain where a read is a transfer."""
        data = self.read(name)
        if len(data) <= len(buf):
            buf[: len(data)] = data
        return len(data)

    @abstractmethod
    def size(self, name: str) -> int | None:
        """The stored size of ``name``, or None when it does not exist."""

    def head(self, name: str, length: int) -> tuple[int, bytes] | None:
        """The stored size of ``name`` and its first ``length`` bytes (fewer when it is
        shorter), or None when it does not exist: what checking a file's header takes. This
        default asks :meth:`size`, then :meth:`read`; a network location answers both in one
        round trip where its protocol allows."""
        size = self.size(name)
        if size is None:
            return None
        try:
            return size, self.read(name, 0, length)
        except FileNotFoundError:
            return None  # removed meanwhile

    @abstractmethod
    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = False) -> None:
        """Create or replace ``name`` atomically: readers see all of ``data`` or none of it.

        ``durable``: on stable storage when this returns; otherwise only after :meth:`flush`.
        """

    @abstractmethod
    def flush(self) -> None:
        """Make every write so far durable."""

    @abstractmethod
    def list(self, folder: str) -> Iterator[StoredFile]:
        """Every file below ``folder`` (recursively); nothing when the folder does not exist."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name``; a missing name is not an error."""

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` atomically (and durably). Only when :attr:`supports_move`."""
        raise NotImplementedError(f"{type(self).__name__} cannot rename")

    @abstractmethod
    def lock(self, note: str) -> AbstractContextManager[None]:
        """Hold the writers' lock; raise :class:`LockHeld` at once when another holds it."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the location itself (the folder, the bucket prefix) exists."""

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether the location holds nothing at all (a new repository may go there)."""

    @abstractmethod
    def create(self) -> None:
        """Make the location (its folder) exist; called once, when a repository is initialised."""

    def local_path(self) -> str | None:
        """The folder on this machine that holds the files, if there is one."""
        return None
