"""A backup location in a folder of an SMB share (a NAS, a Windows share, Samba).

Opened by :func:`recovery.repository.kinds.open_backend` for ``smb://`` addresses. Spoken with
smbprotocol's ``smbclient``: SMB 2/3 entirely in user space (pure Python), so it works without
the kernel's cifs module (which the live system may lack and this test machine has not), and
with no ``mount`` child process that could show a password in its command line.

How it meets docs/FORMAT.md ("Network locations"): a write goes to ``tmp/`` and is renamed into
place with replace semantics; a durable write sends an SMB2 FLUSH before closing; the lock is
the lease of :mod:`recovery.repository.remote`. Each operation borrows an SMB connection of its
own (a connection cache) from the backend's pool, so chunk writes from the backup's workers run
side by side, and a plan and its run log in once.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import logging
import socket
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import smbclient
from smbclient._io import SMBFileIO, SMBFileTransaction, set_info
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.file_info import FileRenameInformation
from smbprotocol.header import NtStatus
from smbprotocol.open import FilePipePrinterAccessMask as Access

from recovery.repository.address import Address
from recovery.repository.backend import Backend, StoredFile
from recovery.repository.credentials import Credentials
from recovery.repository.remote import PARALLEL_REQUESTS, Pool, Uploads, lease, retrying

T = TypeVar("T")

# The library logs a connection's failures from its own threads (with tracebacks); with no
# handler, Python would print them on stderr. Ours is the one clear line the caller gets.
for _library in ("smbprotocol", "smbclient", "spnego"):
    logging.getLogger(_library).addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 15
WRITE_AND_RENAME = (
    Access.FILE_WRITE_DATA | Access.FILE_WRITE_ATTRIBUTES | Access.FILE_WRITE_EA | Access.DELETE
)
LOGIN_TIMEOUT = 20.0
CREDIT_BYTES = 64 << 10
"""The bytes one SMB credit pays for in a read or write (MS-SMB2 3.1.5.2)."""

_REFUSED = {
    NtStatus.STATUS_LOGON_FAILURE,
    NtStatus.STATUS_ACCESS_DENIED,
    NtStatus.STATUS_WRONG_PASSWORD,
    NtStatus.STATUS_PASSWORD_EXPIRED,
}
_ERRNO = {
    NtStatus.STATUS_DISK_FULL: (errno.ENOSPC, "the share is full"),
    NtStatus.STATUS_BAD_NETWORK_NAME: (errno.ENOENT, "there is no such share on the server"),
    NtStatus.STATUS_OBJECT_NAME_NOT_FOUND: (errno.ENOENT, "not found"),
    NtStatus.STATUS_OBJECT_PATH_NOT_FOUND: (errno.ENOENT, "not found"),
}


def _close(kw: dict[str, Any]) -> None:
    smbclient.reset_connection_cache(fail_on_error=False, connection_cache=kw["connection_cache"])


class SmbBackend(Backend):
    parallel_requests = PARALLEL_REQUESTS

    def __init__(self, address: Address, credentials: Credentials) -> None:
        self.address = address
        self.location = str(address)
        self._uploads = Uploads()
        self.credentials = credentials
        self.port = address.port or 445
        self.user = address.user or getpass.getuser()
        unc_path = "\\".join(p for p in address.path.split("/") if p)
        self.root = f"\\\\{address.host}\\{address.share}" + (f"\\{unc_path}" if unc_path else "")
        self._pool: Pool[dict[str, Any]] = Pool(self._open, _close)
        self._mutex = threading.Lock()
        self._login_lock = threading.Lock()
        self._password: str | None = None
        self._asked = False
        self._made_dirs: set[str] = set()

    # -- connections ---------------------------------------------------------------------

    def _open(self) -> dict[str, Any]:
        """A new connection and session: what every smbclient call of one operation takes."""
        with self._mutex:
            if not self._asked:
                self._password = self.credentials.password(self.location)
                self._asked = True
        cache: dict[str, Any] = {}
        with self._login_lock:
            try:
                self._login(cache)
            except BaseException as e:
                if isinstance(self._translate(e), PermissionError):
                    self._asked = False  # refused: ask again next time (this backend is kept)
                raise
        return {"port": self.port, "connection_cache": cache}

    def _login(self, cache: dict[str, Any]) -> None:
        """Open this thread's connection and session, giving up after :data:`LOGIN_TIMEOUT`.

        smbprotocol waits for the session setup answer without a time limit, and smbd was seen
        (rarely, here on loopback, with several logins at once) never to answer one; logins are
        therefore one at a time, and one that hangs is abandoned and retried. The share's tree
        connect, the next request, is made here too, under the same limit: once smbd logged
        "client used more credits than granted" on it (message 3) and a restore then waited on
        that connection for good.
        """
        done = threading.Event()
        failed: list[BaseException] = []

        def login() -> None:
            try:
                smbclient.register_session(
                    self.address.host,
                    username=self.user,
                    password=self._password,
                    port=self.port,
                    connection_timeout=CONNECT_TIMEOUT,
                    connection_cache=cache,
                    auth_protocol="ntlm",
                )
                share = f"\\\\{self.address.host}\\{self.address.share}"
                smbclient.stat(share, port=self.port, connection_cache=cache)
            except BaseException as e:
                failed.append(e)
            finally:
                done.set()

        threading.Thread(target=login, name="smb-login", daemon=True).start()
        if not done.wait(LOGIN_TIMEOUT):
            with contextlib.suppress(Exception):
                smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)
            raise TimeoutError("the SMB server did not answer the login")
        if failed:
            raise failed[0]

    def _translate(self, e: BaseException) -> OSError | None:
        status = getattr(e, "ntstatus", None) or getattr(e, "status", None)
        if status in _REFUSED or isinstance(e, SMBAuthenticationError):
            return PermissionError(
                errno.EACCES,
                f"the SMB server refused user {self.user} (wrong password, or no access to "
                f"the share {self.address.share}): give the password in RECOVERY_PASSWORD",
            )
        if status == NtStatus.STATUS_SHARING_VIOLATION:
            return None  # another handle on the file, ours or another writer's: try again
        if status in _ERRNO:
            err, text = _ERRNO[status]
            return OSError(err, text)
        if isinstance(e, SMBOSError):
            if e.errno:
                return OSError(e.errno, e.strerror)
            return OSError(errno.EIO, f"the SMB server answered {e.strerror}")
        if isinstance(e, SMBConnectionClosed | ConnectionError | socket.timeout | TimeoutError):
            return None
        if isinstance(e, SMBResponseException):
            return OSError(errno.EIO, f"the SMB server answered {type(e).__name__}")
        if isinstance(e, SMBException):
            return None
        if isinstance(e, ValueError) and "connect" in str(e).lower():
            return None  # smbprotocol: "Failed to connect to 'HOST:PORT': ..."
        if isinstance(e, OSError):
            return e if e.errno in (errno.ENOENT, errno.EEXIST, errno.ENOTDIR) else None
        return OSError(errno.EIO, f"SMB failed: {type(e).__name__}: {e}")

    def _call(self, what: str, operation: Callable[[dict[str, Any]], T]) -> T:
        return retrying(
            what,
            lambda: self._pool.run(operation, keep=lambda e: self._translate(e) is not None),
            self._translate,
        )

    def _path(self, name: str) -> str:
        return self.root + ("\\" + name.replace("/", "\\") if name else "")

    def _in_share(self, name: str) -> str:
        """``name`` as a path inside the share (what a rename names its target by)."""
        return "\\".join(p for p in [*self.address.path.split("/"), *name.split("/")] if p)

    def _makedirs(self, folder: str, kw: dict[str, Any]) -> None:
        if not folder or folder in self._made_dirs:
            return
        smbclient.makedirs(self._path(folder), exist_ok=True, **kw)
        with self._mutex:
            self._made_dirs.add(folder)

    # -- the operations ------------------------------------------------------------------

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._uploads.wait_for(name)

        def get(kw: dict[str, Any]) -> bytes:
            if offset == 0:
                found = self._read_start(name, length, kw)
                if found is not None:
                    size, data = found
                    if len(data) == (size if length is None else min(size, length)):
                        return data  # all that was asked for (else: larger than one read)
            # Shared for reading, writing and deleting: worker threads read the same chunk at
            # once (a disk repeats content), and a remove may delete it meanwhile.
            with smbclient.open_file(
                self._path(name), "rb", buffering=0, share_access="rwd", **kw
            ) as f:
                # The open's answer carries the file's size: one buffer of the size to read,
                # filled in place (reading into fresh buffers of the largest size a chunk file
                # can have cost more than the transfer).
                end = int(f.fd.end_of_file)
                n = max(0, end - offset) if length is None else max(0, min(length, end - offset))
                buf = bytearray(n)
                view = memoryview(buf)
                f.seek(offset)
                done = 0
                while done < n:
                    got = f.readinto(view[done:])
                    if not got:
                        break
                    done += got
                return bytes(view[:done])

        return self._call(f"read {name}", get)

    def head(self, name: str, length: int) -> tuple[int, bytes] | None:
        self._uploads.wait_for(name)

        try:
            found = self._call(f"read {name}", lambda kw: self._read_start(name, length, kw))
        except FileNotFoundError:
            return None
        return found if found is not None else super().head(name, length)

    def _read_start(
        self, name: str, length: int | None, kw: dict[str, Any]
    ) -> tuple[int, bytes] | None:
        """The size of ``name`` and its first ``length`` bytes (all of them: None), as far as
        one read request takes them (the connection's largest read: 8 MiB with Samba, so a
        4 MiB cell's chunk file fits), by an open, that read and a close in one compound
        request: one round trip, and one message to pack and sign instead of three. None when
        the credits for such a read are not at hand (the server grants more as the other
        requests ask): then read it the long way."""
        f = SMBFileIO(self._path(name), mode="r", share_access="rwd", **kw)
        connection = f.fd.connection
        largest = int(connection.max_read_size)
        want = largest if length is None else min(length, largest)
        window = connection.sequence_window
        if want <= 0 or (want - 1) // CREDIT_BYTES + 1 + 2 > window["high"] - window["low"]:
            return None
        try:
            with SMBFileTransaction(f) as transaction:
                transaction += f.fd.read(0, want, send=False)
        except SMBOSError as e:
            if e.ntstatus == NtStatus.STATUS_END_OF_FILE:
                return 0, b""  # an empty file
            raise
        return int(f.fd.end_of_file), transaction.results[0]

    def size(self, name: str) -> int | None:
        self._uploads.wait_for(name)

        def measure(kw: dict[str, Any]) -> int:
            # Open and close in one compound request: the open's answer holds the size.
            # (smbclient.stat asks for five kinds of information more, each a structure
            # parsed in Python: with it, the size and header of 150 chunk files took 0.9 s
            # of CPU; 0.5 s with this and the compound read.)
            f = SMBFileIO(
                self._path(name),
                mode="r",
                share_access="rwd",
                desired_access=Access.FILE_READ_ATTRIBUTES,
                **kw,
            )
            SMBFileTransaction(f).commit()
            return int(f.fd.end_of_file)

        try:
            return self._call(f"size of {name}", measure)
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = False) -> None:
        if durable:  # after every chunk written before it (a manifest, a lease)
            self._uploads.settle()
            self._write_now(name, data, durable)
        else:
            blob = bytes(data)  # the caller may reuse its buffer
            self._uploads.submit(name, lambda: self._write_now(name, blob, durable))

    def _write_now(self, name: str, data: bytes | bytearray | memoryview, durable: bool) -> None:
        unique = f"tmp/{name.rpartition('/')[2]}.{uuid.uuid4().hex}.new"

        def put(kw: dict[str, Any]) -> None:
            self._makedirs("tmp", kw)
            self._makedirs(name.rpartition("/")[0], kw)
            tmp = self._path(unique)
            try:
                view = memoryview(data).cast("B")
                with smbclient.open_file(
                    tmp, "wb", buffering=0, desired_access=WRITE_AND_RENAME, **kw
                ) as f:
                    done = 0
                    while done < len(view):
                        done += f.write(view[done:]) or 0
                    if durable:
                        f.flush()  # an SMB2 FLUSH: the server puts the file on its disk
                    # Renamed through the handle that wrote it: smbclient.replace opens the
                    # file again and probes the target, two more round trips per chunk.
                    with SMBFileTransaction(f) as transaction:
                        rename = FileRenameInformation()
                        rename["replace_if_exists"] = True
                        rename["file_name"] = self._in_share(name)
                        set_info(transaction, rename)
            except BaseException:
                with contextlib.suppress(Exception):
                    smbclient.remove(tmp, **kw)
                raise

        self._call(f"write {name}", put)

    def flush(self) -> None:
        """Wait for the background uploads (each file is closed on the server when its upload
        ends: see FORMAT.md's limits); raise the first that failed."""
        self._uploads.flush()

    def list(self, folder: str) -> Iterator[StoredFile]:
        self._uploads.wait_all()

        def walk(kw: dict[str, Any]) -> list[StoredFile]:
            found: list[StoredFile] = []
            stack = [folder]
            while stack:
                rel = stack.pop()
                try:
                    entries = list(smbclient.scandir(self._path(rel), **kw))
                except FileNotFoundError:
                    continue
                for e in sorted(entries, key=lambda e: e.name):
                    name = f"{rel}/{e.name}" if rel else e.name
                    if e.is_dir():
                        stack.append(name)
                    elif e.is_file():
                        found.append(StoredFile(name, int(e.smb_info.end_of_file)))
            return found

        try:
            yield from self._call(f"list {folder or '/'}", walk)
        except FileNotFoundError:
            return

    def delete(self, name: str) -> None:
        self._uploads.wait_for(name)
        with contextlib.suppress(FileNotFoundError):
            self._call(f"delete {name}", lambda kw: smbclient.remove(self._path(name), **kw))

    def move(self, src: str, dst: str) -> None:
        self._uploads.wait_for(src)
        self._uploads.wait_for(dst)

        def rename(kw: dict[str, Any]) -> None:
            self._makedirs(dst.rpartition("/")[0], kw)
            smbclient.replace(self._path(src), self._path(dst), **kw)

        self._call(f"move {src}", rename)

    def lock(self, note: str) -> AbstractContextManager[None]:
        self._uploads.forget()  # a new writer: an earlier one was told of its failures
        return lease(self, note)

    def exists(self) -> bool:
        try:
            st = self._call("find the folder", lambda kw: smbclient.stat(self._path(""), **kw))
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", self.location)
        return True

    def is_empty(self) -> bool:
        if not self.exists():
            return True
        return not self._call("list", lambda kw: smbclient.listdir(self._path(""), **kw))

    def create(self) -> None:
        self._call("create the folder", lambda kw: smbclient.makedirs(self.root, True, **kw))
