"""A backup location in a folder of an SSH server, over SFTP.

Opened by :func:`recovery.repository.kinds.open_backend` for ``sftp://`` addresses. Spoken
with paramiko: the well-kept pure-Python SSH implementation (no ``ssh`` child process, so no
secret can reach another process's command line, and the host key decision is ours to make).

How it meets docs/FORMAT.md ("Network locations"): a write goes to ``tmp/`` and is renamed into
place with ``posix-rename@openssh.com``; a durable write first calls ``fsync@openssh.com`` when
the server has it; the lock is the lease of :mod:`recovery.repository.remote`. Each operation
borrows an SSH connection of its own from the backend's pool (backup writes chunks from several
worker threads; paramiko's SFTP client serialises requests per channel), so a plan and its run,
and one worker pool after another, log in once. Host keys are checked against
``~/.ssh/known_hosts`` and ``/etc/ssh/ssh_known_hosts``; an unknown one is accepted only through
the credentials provider (and then remembered in ``~/.ssh/known_hosts``); a changed one is
always refused.
"""

# ruff: noqa: E402 (invoke is marked missing before paramiko is imported: see below)
from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import logging
import os
import posixpath
import socket
import stat
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

# paramiko imports invoke (and with it asyncio and unittest.mock: 50 ms of every SFTP
# command's start) only to run the "Match exec" lines of ssh_config files, which this backend
# never reads; marked missing, it is not imported (paramiko.config expects that it may be).
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]

import paramiko

from recovery.repository.address import Address
from recovery.repository.backend import Backend, StoredFile
from recovery.repository.credentials import Credentials
from recovery.repository.remote import PARALLEL_REQUESTS, Pool, Uploads, lease, retrying

T = TypeVar("T")

# The library logs a connection's failures from its own threads (with tracebacks); with no
# handler, Python would print them on stderr. Ours is the one clear line the caller gets.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
CONNECT_TIMEOUT = 15.0
BIG_READ = 64 << 10
"""Reads longer than this are pipelined (readv) rather than one request at a time."""
WINDOW = 16 << 20
"""SSH channel window: paramiko's 2 MiB default halves read throughput on a fast link."""
PACKET = 256 << 10
OPENSSH_READ = 255 << 10
"""Read request size when the server is OpenSSH (its limit is 256 KiB per message); other
servers get paramiko's 32 KiB, which every SFTP server must take. Measured on loopback: reads
go from ~40 to ~80 MiB/s."""
OPENSSH_WRITE = OPENSSH_READ
"""Write request size for OpenSSH (paramiko's 32 KiB otherwise): the SSH packets stay 32 KiB,
but sftp-server answers each request with a status message that paramiko handles in Python,
and writes each with a system call of its own. Writing 305 MB of chunk files on loopback
with six threads took 1.1-1.25 s of our CPU instead of 1.8 s (170-194 MB/s instead of 145)."""
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Offered before paramiko's own list (AES-CTR with a separate HMAC), which follows for servers
without them. OpenSSH sends data in packets of 32 KiB whatever the client allows, and paramiko
handles each in Python: with AES-GCM it decrypts and authenticates a packet in one call instead
of a decryption, an HMAC and a MAC comparison in Python. Reading 305 MB of chunk files on
loopback with six threads took 1.3-1.5 s of our CPU and 0.6-0.8 s of sshd's instead of 2.2-3.2
s and 1.0-1.2 s."""


class _Refused(Exception):
    """A final, non-transient failure already phrased for the person."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err
        self.message = message


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: ``SHA256:`` and unpadded base64."""
    return str(key.fingerprint)


OPENSSH_KEY = "OPENSSH PRIVATE KEY"
OPENSSH_KEY_MAGIC = b"openssh-key-v1\0"
KEY_CLASSES: dict[str, type[paramiko.PKey]] = {
    "ssh-ed25519": paramiko.Ed25519Key,
    "ssh-rsa": paramiko.RSAKey,
    "ecdsa-sha2-nistp256": paramiko.ECDSAKey,
    "ecdsa-sha2-nistp384": paramiko.ECDSAKey,
    "ecdsa-sha2-nistp521": paramiko.ECDSAKey,
}


def _openssh_key_type(path: Path) -> str | None:
    """The key type an OpenSSH-format private key file names in its public part (which is not
    encrypted), or None for any other file."""
    try:
        text = path.read_text()
        body = text.split(f"-----BEGIN {OPENSSH_KEY}-----", 1)[1]
        blob = base64.b64decode(body.split(f"-----END {OPENSSH_KEY}-----", 1)[0])
        if not blob.startswith(OPENSSH_KEY_MAGIC):
            return None
        m = paramiko.Message(blob[len(OPENSSH_KEY_MAGIC) :])
        m.get_string(), m.get_string(), m.get_string()  # cipher, KDF, KDF options
        if m.get_int() < 1:
            return None
        return str(paramiko.Message(m.get_string()).get_text())
    except (OSError, UnicodeDecodeError, IndexError, ValueError, paramiko.SSHException):
        return None


def _load_key(path: Path, passphrase: bytes | None) -> paramiko.PKey:
    """A private key file, decrypted once. ``PKey.from_path`` decrypts it twice (once to learn
    its type, once more in the class it picks), and an OpenSSH key's bcrypt KDF takes 0.14 s of
    CPU each time, before the first connection; so the class is chosen from the key's public
    part when the file is in OpenSSH's format."""
    key_class = KEY_CLASSES.get(_openssh_key_type(path) or "")
    if key_class is None:
        return paramiko.PKey.from_path(path, passphrase)
    return key_class.from_private_key_file(str(path), passphrase)


def _close(client: paramiko.SFTPClient) -> None:
    client.get_channel().get_transport().close()


class SftpBackend(Backend):
    parallel_requests = PARALLEL_REQUESTS

    def __init__(self, address: Address, credentials: Credentials) -> None:
        self.address = address
        self.location = str(address)
        self._uploads = Uploads()
        self.credentials = credentials
        self.port = address.port or 22
        self.user = address.user or getpass.getuser()
        self._pool: Pool[paramiko.SFTPClient] = Pool(self._connect, _close)
        self._mutex = threading.Lock()
        self._root: str | None = None
        self._trusted_key: str | None = None
        self._keys: list[paramiko.PKey] | None = None
        self._password: str | None = None
        self._asked_password = False
        self._has_fsync = True
        self._openssh = False
        self._made_dirs: set[str] = set()

    # -- connections ---------------------------------------------------------------------

    def _known_hosts_name(self) -> str:
        return self.address.host if self.port == 22 else f"[{self.address.host}]:{self.port}"

    def _check_host_key(self, key: paramiko.PKey) -> None:
        name, key_type, seen = self._known_hosts_name(), key.get_name(), key.get_base64()
        if self._trusted_key == seen:
            return
        known = paramiko.HostKeys()
        user_file = Path(os.path.expanduser("~/.ssh/known_hosts"))
        for hosts in (Path("/etc/ssh/ssh_known_hosts"), user_file):
            with contextlib.suppress(OSError, paramiko.SSHException):
                known.load(str(hosts))
        entry = known.lookup(name)
        if entry is not None and key_type in entry:
            if entry[key_type].get_base64() == seen:
                self._trusted_key = seen
                return
            raise _Refused(
                errno.EACCES,
                f"the SSH server {name} shows a different {key_type} key "
                f"({fingerprint(key)}) than the one in known_hosts: someone may be "
                f"impersonating it; if the server was reinstalled, remove the old key "
                f"(ssh-keygen -R '{name}') and try again",
            )
        if not self.credentials.accept_host_key(name, key_type, fingerprint(key)):
            raise _Refused(
                errno.EACCES,
                f"the SSH server {name} is unknown (its {key_type} key is {fingerprint(key)}): "
                "check the fingerprint with the server's owner, then accept it "
                "(--accept-new-host-key, or RECOVERY_ACCEPT_NEW_HOST_KEY=1)",
            )
        with contextlib.suppress(OSError):
            user_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(user_file, "a") as out:
                out.write(f"{name} {key_type} {seen}\n")
        self._trusted_key = seen

    def _password_once(self) -> str | None:
        if not self._asked_password:
            self._password = self.credentials.password(self.location)
            self._asked_password = True
        return self._password

    def _load_keys(self) -> list[paramiko.PKey]:
        """The private keys to offer: ``--identity`` alone when given, else the usual ones.
        An encrypted key is unlocked with the password (RECOVERY_PASSWORD)."""
        if self._keys is not None:
            return self._keys
        chosen = self.credentials.identity(self.location)
        paths = (
            [Path(chosen)]
            if chosen
            else [Path(os.path.expanduser(f"~/.ssh/{k}")) for k in DEFAULT_KEYS]
        )
        keys: list[paramiko.PKey] = []
        for path in paths:
            if not chosen and not path.exists():
                continue
            try:
                try:
                    keys.append(_load_key(path, None))
                except (
                    paramiko.PasswordRequiredException,
                    TypeError,
                ):  # TypeError: from cryptography
                    phrase = self._password_once()
                    if phrase is None:
                        if chosen:
                            raise _Refused(
                                errno.EACCES,
                                f"the SSH key {path} is locked with a passphrase: give it in "
                                "RECOVERY_PASSWORD",
                            ) from None
                        continue
                    keys.append(_load_key(path, phrase.encode()))
            except FileNotFoundError:
                raise _Refused(errno.ENOENT, f"there is no SSH key file {path}") from None
            except (paramiko.SSHException, ValueError):
                if chosen:
                    raise _Refused(
                        errno.EACCES,
                        f"cannot use the SSH key {path}: wrong passphrase (RECOVERY_PASSWORD), "
                        "or not a private key",
                    ) from None
        self._keys = keys
        return keys

    def _authenticate(self, t: paramiko.Transport) -> None:
        """Log in on ``t``. Connections log in side by side (a restore opens six at once);
        only unlocking the keys and asking for the password are one thread's at a time."""
        tried = []
        with self._mutex:
            keys = self._load_keys()
        for key in keys:
            try:
                t.auth_publickey(self.user, key)
                return
            except paramiko.AuthenticationException:
                tried.append(f"{key.get_name()} key")
        with self._mutex:
            password = self._password_once()
        if password is not None:
            try:
                t.auth_password(self.user, password)
                return
            except paramiko.AuthenticationException:
                tried.append("password")
        what = ", ".join(tried) if tried else "no key and no password"
        raise _Refused(
            errno.EACCES,
            f"the SSH server refused user {self.user} (tried {what}): give a key with "
            "--identity, or the password in RECOVERY_PASSWORD",
        )

    def _connect(self) -> paramiko.SFTPClient:
        sock = socket.create_connection((self.address.host, self.port), timeout=CONNECT_TIMEOUT)
        t = paramiko.Transport(sock)
        try:
            options = t.get_security_options()
            options.ciphers = CIPHERS + tuple(c for c in options.ciphers if c not in CIPHERS)
            t.start_client(timeout=CONNECT_TIMEOUT)
            self._check_host_key(t.get_remote_server_key())
            self._openssh = "OpenSSH" in (t.remote_version or "")
            self._authenticate(t)
            client = paramiko.SFTPClient.from_transport(
                t, window_size=WINDOW, max_packet_size=PACKET
            )
            if client is None:
                raise paramiko.SSHException("the server offers no SFTP")
            client.get_channel().settimeout(120)
        except BaseException as e:
            t.close()
            if isinstance(e, _Refused) and e.errno == errno.EACCES:
                with self._mutex:  # ask again next time (this backend is kept)
                    self._keys, self._asked_password = None, False
            raise
        with self._mutex:
            if self._root is None:
                home = client.normalize(".") if self.address.home else "/"
                self._root = posixpath.join(home, self.address.path).rstrip("/") or "/"
        return client

    def _translate(self, e: BaseException) -> OSError | None:
        if isinstance(e, _Refused):
            return OSError(e.errno, e.message)
        if isinstance(e, paramiko.AuthenticationException):
            return PermissionError(errno.EACCES, f"the SSH server refused user {self.user}")
        if isinstance(e, paramiko.SSHException | EOFError | socket.timeout | ConnectionError):
            return None
        if isinstance(e, OSError):
            if e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR):
                return e
            if e.errno is None and e.args and e.args[0] == "Failure":
                return OSError(errno.EIO, "the SSH server could not complete a write (full?)")
            if e.errno is None:
                return OSError(errno.EIO, f"the SSH server answered: {e}")
            return None  # network-level (ECONNRESET, EHOSTUNREACH, ...)
        return OSError(errno.EIO, f"SFTP failed: {type(e).__name__}: {e}")

    def _call(self, what: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        return retrying(
            what,
            lambda: self._pool.run(operation, keep=lambda e: self._translate(e) is not None),
            self._translate,
        )

    def _path(self, name: str) -> str:
        assert self._root is not None
        return f"{self._root}/{name}" if name else self._root

    def _makedirs(self, client: paramiko.SFTPClient, folder: str) -> None:
        """``mkdir -p`` of ``folder`` (relative), remembered so each is made once."""
        if not folder or folder in self._made_dirs:
            return
        parent = folder.rpartition("/")[0]
        self._makedirs(client, parent)
        with contextlib.suppress(OSError):
            client.mkdir(self._path(folder))
        with self._mutex:
            self._made_dirs.add(folder)

    # -- the operations ------------------------------------------------------------------

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._uploads.wait_for(name)

        def get(c: paramiko.SFTPClient) -> bytes:
            with c.open(self._path(name), "rb") as f:
                if self._openssh:
                    f.MAX_REQUEST_SIZE = OPENSSH_READ
                if length is not None and length <= BIG_READ:
                    f.seek(offset)
                    return bytes(f.read(length))
                end = f.stat().st_size or 0
                n = max(0, end - offset) if length is None else max(0, min(length, end - offset))
                if n == 0:
                    return b""
                # One range per request: paramiko builds a longer range by appending each
                # piece to the bytes read so far, copying a 4 MiB file ~16 times over.
                step = f.MAX_REQUEST_SIZE
                pieces = [(o, min(step, offset + n - o)) for o in range(offset, offset + n, step)]
                return b"".join(f.readv(pieces))

        return self._call(f"read {name}", get)

    def head(self, name: str, length: int) -> tuple[int, bytes] | None:
        """The read goes out before the file's stat and travels with it: three round trips
        (open, stat and read, close) instead of four."""
        self._uploads.wait_for(name)

        def get(c: paramiko.SFTPClient) -> tuple[int, bytes]:
            with c.open(self._path(name), "rb") as f:
                f.prefetch(length)
                size = int(f.stat().st_size or 0)
                # Not past the end: paramiko would wait for an answer to a read it has had
                # (a read from the end of a file is answered with EOF, which the prefetch
                # keeps as an error for later and does not count as an answer).
                return size, bytes(f.read(min(length, size))) if size else b""

        try:
            return self._call(f"read {name}", get)
        except FileNotFoundError:
            return None

    def size(self, name: str) -> int | None:
        self._uploads.wait_for(name)
        try:
            attrs = self._call(f"size of {name}", lambda c: c.stat(self._path(name)))
        except FileNotFoundError:
            return None
        return int(attrs.st_size or 0)

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = False) -> None:
        if durable:  # after every chunk written before it (a manifest, a lease)
            self._uploads.settle()
            self._write_now(name, data, durable)
        else:
            blob = bytes(data)  # the caller may reuse its buffer
            self._uploads.submit(name, lambda: self._write_now(name, blob, durable))

    def _write_now(self, name: str, data: bytes | bytearray | memoryview, durable: bool) -> None:
        unique = f"tmp/{name.rpartition('/')[2]}.{uuid.uuid4().hex}.new"

        def put(c: paramiko.SFTPClient) -> None:
            final, tmp = self._path(name), self._path(unique)
            self._makedirs(c, "tmp")
            self._makedirs(c, name.rpartition("/")[0])
            try:
                with c.open(tmp, "wb", bufsize=0) as f:  # unbuffered: no copy into a buffer
                    if self._openssh:
                        f.MAX_REQUEST_SIZE = OPENSSH_WRITE
                    f.set_pipelined(True)
                    f.write(bytes(data))
                    if durable:
                        self._fsync(c, f)
                c.posix_rename(tmp, final)
            except BaseException:
                with contextlib.suppress(Exception):
                    c.remove(tmp)
                raise

        self._call(f"write {name}", put)

    def _fsync(self, c: paramiko.SFTPClient, f: paramiko.SFTPFile) -> None:
        if not self._has_fsync:
            return
        f.flush()
        try:
            # paramiko has no public call for OpenSSH's fsync extension.
            c._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError as e:
            if e.errno is not None:
                raise
            self._has_fsync = False  # "Operation unsupported": this server cannot

    def flush(self) -> None:
        """Wait for the background uploads (each file is closed on the server when its upload
        ends: see FORMAT.md's limits); raise the first that failed."""
        self._uploads.flush()

    def list(self, folder: str) -> Iterator[StoredFile]:
        self._uploads.wait_all()

        def walk(c: paramiko.SFTPClient) -> list[StoredFile]:
            found: list[StoredFile] = []
            stack = [folder]
            while stack:
                rel = stack.pop()
                try:
                    entries = c.listdir_attr(self._path(rel))
                except FileNotFoundError:
                    continue
                for e in sorted(entries, key=lambda e: e.filename):
                    name = f"{rel}/{e.filename}" if rel else e.filename
                    mode = e.st_mode or 0
                    if stat.S_ISDIR(mode):
                        stack.append(name)
                    elif stat.S_ISREG(mode):
                        found.append(StoredFile(name, int(e.st_size or 0)))
            return found

        yield from self._call(f"list {folder or '/'}", walk)

    def delete(self, name: str) -> None:
        self._uploads.wait_for(name)
        with contextlib.suppress(FileNotFoundError):
            self._call(f"delete {name}", lambda c: c.remove(self._path(name)))

    def move(self, src: str, dst: str) -> None:
        self._uploads.wait_for(src)
        self._uploads.wait_for(dst)

        def rename(c: paramiko.SFTPClient) -> None:
            self._makedirs(c, dst.rpartition("/")[0])
            c.posix_rename(self._path(src), self._path(dst))

        self._call(f"move {src}", rename)

    def lock(self, note: str) -> AbstractContextManager[None]:
        self._uploads.forget()  # a new writer: an earlier one was told of its failures
        return lease(self, note)

    def exists(self) -> bool:
        try:
            attrs: Any = self._call("find the folder", lambda c: c.stat(self._path("")))
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(attrs.st_mode or 0):
            raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", self.location)
        return True

    def is_empty(self) -> bool:
        if not self.exists():
            return True
        return not self._call("list", lambda c: c.listdir(self._path("")))

    def create(self) -> None:
        def mkdirs(c: paramiko.SFTPClient) -> None:
            assert self._root is not None
            path = ""
            for part in self._root.strip("/").split("/"):
                path += f"/{part}"
                with contextlib.suppress(OSError):
                    c.mkdir(path)

        self._call("create the folder", mkdirs)
