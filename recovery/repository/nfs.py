"""``nfs://HOST[:PORT]/EXPORT[/PATH]``: a backup location on an NFS server, through the kernel's
NFS client.

The export is mounted (:mod:`recovery.devices.nfs`: NFSv4 over TCP) on a private folder under
/run on the first operation, and the location is then a local folder (:class:`LocalFolder`) at
PATH inside it: its atomic rename, fsync and flock (NFSv4 locks, held by the server) are the
format's. The mount stays for the process (one per address, as :func:`open_backend` keeps one
backend per address) and is unmounted when the process ends. EXPORT is the first element of the
path: an NFSv4 server shows every export under one tree, and the client crosses into deeper
exports by itself.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from recovery.repository.address import Address
from recovery.repository.backend import Backend, StoredFile
from recovery.repository.local import LocalFolder

_numbers = itertools.count()


class NfsBackend(Backend):
    parallel_requests = 4
    supports_move = True

    def __init__(self, where: Address) -> None:
        self.where = where
        self.location = str(where)
        self._folder: LocalFolder | None = None
        self._mounted: Path | None = None
        self._lock = threading.Lock()

    def _local(self) -> LocalFolder:
        with self._lock:
            if self._folder is None:
                from recovery.devices import nfs

                target = nfs.MOUNTS / f"{os.getpid()}-{next(_numbers)}"
                nfs.mount_export(self.where.host, self.where.port, self.where.share, target)
                self._mounted = target
                atexit.register(self._unmount, os.getpid())
                self._folder = LocalFolder(target / self.where.path if self.where.path else target)
            return self._folder

    def _unmount(self, pid: int) -> None:
        """At the end of the process that mounted it (never in a forked child)."""
        if os.getpid() != pid or self._mounted is None:
            return
        from recovery.devices import nfs

        nfs.unmount(self._mounted)
        self._mounted = self._folder = None

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._local().read(name, offset, length)

    def size(self, name: str) -> int | None:
        return self._local().size(name)

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = False) -> None:
        self._local().write(name, data, durable)

    def flush(self) -> None:
        self._local().flush()

    def list(self, folder: str) -> Iterator[StoredFile]:
        return self._local().list(folder)

    def delete(self, name: str) -> None:
        self._local().delete(name)

    def move(self, src: str, dst: str) -> None:
        self._local().move(src, dst)

    def lock(self, note: str) -> AbstractContextManager[None]:
        return self._local().lock(note)

    def exists(self) -> bool:
        return self._local().exists()

    def is_empty(self) -> bool:
        return self._local().is_empty()

    def create(self) -> None:
        self._local().create()

    def local_path(self) -> str | None:
        """None: the files are on the server, on no disk of this machine (a backup is never
        refused because the folder would be on the disk it reads)."""
        return None
