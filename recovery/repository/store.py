"""The repository format: chunk files, manifests, the writers' lock (docs/FORMAT.md).

Called by the engine (backup, restore, verify, remove) through :class:`Repository`, which reads
and writes only through a storage :class:`~recovery.repository.backend.Backend`. Promises: a chunk
file either is complete or does not exist (the backend's atomic write); a manifest appears only
after :meth:`Repository.flush`; every read of a chunk is checked against its hash; OSError and
zstd errors are translated into our errors.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import blake3
import zstandard

from recovery.errors import (
    ImageNotFound,
    IntegrityError,
    NotARepository,
    PassphraseNeeded,
    RecoveryError,
    RepositoryError,
    RepositoryLocked,
    UnsupportedVersion,
    UsageError,
)
from recovery.repository import secrets
from recovery.repository.backend import Backend, LockHeld
from recovery.repository.kinds import open_backend
from recovery.repository.sealing import SEAL_OVERHEAD, Keys, check_encryption, new_encryption
from recovery.repository.sealing import unlock as unlock_keys
from recovery.repository.sealing import wrap as wrap_keys

REPO_MAGIC = "recovery-repository"
REPO_HEADER = "recovery-repo"
"""The file that makes a directory a repository (docs/FORMAT.md, `recovery-repo`)."""
REPO_VERSION = 2
"""The newest header version this recovery reads: 1 plain, 2 encrypted (docs/FORMAT.md)."""
PLAIN_VERSION = 1
ENCRYPTED_VERSION = 2
CHUNKS_FOLDER = "chunks"
IMAGES_FOLDER = "images"
TMP_FOLDER = "tmp"
HASH_SIZE = 32
CREATION_WAIT = 5.0
"""Seconds a new location's creator waits for another creator's lock (see _creation_lock)."""
MAX_CELL = 64 << 20
MAX_MANIFEST = 16 << 20

CHUNK_HEADER = struct.Struct("<4sBBHII")
CHUNK_MAGIC = b"RCK1"
MAX_STORED_CHUNK = MAX_CELL + CHUNK_HEADER.size + SEAL_OVERHEAD
"""The largest chunk file: a raw 64 MiB cell with its header, sealed."""
UNREADABLE = "unreadable-"
"""Prefix of the name an encrypted location lists a manifest under that does not open."""
_HEX32 = re.compile(r"[0-9a-f]{32}")
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1


class ChunkHeader(NamedTuple):
    magic: bytes
    version: int
    compression: int
    reserved: int
    raw_length: int
    stored_length: int


MANIFEST_HEADER = struct.Struct("<4sHHI")
MANIFEST_MAGIC = b"RIMG"
MANIFEST_VERSION = 1
"""Disk images' manifests; file images' are version 2 (FORMAT.md, "File images")."""
NEWEST_MANIFEST_VERSION = 2

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

_thread_local = threading.local()


def hash_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of ``data``; blake3 releases the GIL, so worker threads hash in parallel."""
    return blake3.blake3(data).digest()


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_thread_local, "dctx", None)
    if d is None:
        d = zstandard.ZstdDecompressor()
        _thread_local.dctx = d
    return d


def _compressor(level: int) -> zstandard.ZstdCompressor:
    key = f"cctx{level}"
    c: zstandard.ZstdCompressor | None = getattr(_thread_local, key, None)
    if c is None:
        c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        setattr(_thread_local, key, c)
    return c


SCRATCH_KEEP = 8 << 20
"""Largest buffer a thread keeps for its next chunk (a 4 MiB cell's chunk file fits)."""


def _scratch(slot: str, size: int) -> bytearray:
    """A buffer of at least ``size`` bytes that this thread reuses for every chunk file it
    reads (slot ``"stored"``) or opens (``"plain"``). Fresh memory per chunk cost more than
    the work done in it: allocation, zeroing and a page fault per 4 KiB (the restore's check
    pass spent 0.46 s of CPU on the 780 MB of the reference image, 0.07 s of it in AES-GCM).
    A rare chunk larger than :data:`SCRATCH_KEEP` gets a buffer of its own."""
    old: bytearray | None = getattr(_thread_local, slot, None)
    if old is not None and len(old) >= size:
        return old
    # Doubling: a thread meets a few growing sizes, not one reallocation per chunk.
    grown = min(2 * len(old), SCRATCH_KEEP) if old is not None else 1 << 20
    buf = bytearray(max(size, grown))
    if len(buf) <= SCRATCH_KEEP:
        setattr(_thread_local, slot, buf)
    return buf


def encode_chunk(raw: bytes | bytearray | memoryview, level: int) -> bytes:
    """The bytes of a chunk file for ``raw``: header + zstd frame (or raw if that is smaller)."""
    compressed = _compressor(level).compress(raw)
    if len(compressed) < len(raw):
        return (
            CHUNK_HEADER.pack(CHUNK_MAGIC, 1, COMPRESSION_ZSTD, 0, len(raw), len(compressed))
            + compressed
        )
    return CHUNK_HEADER.pack(CHUNK_MAGIC, 1, COMPRESSION_NONE, 0, len(raw), len(raw)) + bytes(raw)


def decode_chunk(
    blob: bytes | bytearray | memoryview,
    expected: bytes,
    where: str,
    hasher: Callable[[bytes | bytearray | memoryview], bytes] = hash_bytes,
) -> bytes:
    """The raw bytes of a chunk file's content, checked against ``expected`` (its hash)."""
    if len(blob) < CHUNK_HEADER.size:
        raise IntegrityError(f"{where}: chunk {expected.hex()} is truncated ({len(blob)} bytes)")
    h = ChunkHeader(*CHUNK_HEADER.unpack_from(blob))
    if h.magic != CHUNK_MAGIC or h.version != 1 or h.reserved != 0:
        raise IntegrityError(f"{where}: chunk {expected.hex()} has a damaged header")
    if h.compression not in (COMPRESSION_NONE, COMPRESSION_ZSTD):
        raise IntegrityError(f"{where}: chunk {expected.hex()} names unknown compression")
    if not 0 < h.raw_length <= MAX_CELL:
        raise IntegrityError(f"{where}: chunk {expected.hex()} has an impossible length")
    if h.stored_length != len(blob) - CHUNK_HEADER.size:
        raise IntegrityError(
            f"{where}: chunk {expected.hex()} is truncated or padded: expected "
            f"{h.stored_length} payload bytes, got {len(blob) - CHUNK_HEADER.size}"
        )
    payload = memoryview(blob)[CHUNK_HEADER.size :]
    if h.compression == COMPRESSION_ZSTD:
        try:
            raw = _decompressor().decompress(payload, max_output_size=h.raw_length)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{where}: chunk {expected.hex()} does not decompress: {e}") from e
    else:
        raw = bytes(payload)
    if len(raw) != h.raw_length:
        raise IntegrityError(
            f"{where}: chunk {expected.hex()} decompressed to {len(raw)} bytes, "
            f"expected {h.raw_length}"
        )
    got = hasher(raw)
    if got != expected:
        raise IntegrityError(
            f"{where}: chunk {expected.hex()} is damaged: its content hashes to {got.hex()}"
        )
    return raw


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a usable image name: use letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit)"
        )
    return name


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RepositoryInfo:
    path: str
    id: str
    created: str
    version: int
    encrypted: bool = False


def chunk_name(digest: bytes) -> str:
    h = digest.hex()
    return f"chunks/{h[:2]}/{h}"


def manifest_name(image: str) -> str:
    return f"images/{image}.image"


def verified_name(image: str) -> str:
    return f"images/{image}.verified"


def removing_name(image: str) -> str:
    return f"tmp/{image}.image.removing"


LOCK_POLL_SECONDS = 2.0


@dataclass
class _WaitPolicy:
    seconds: float = 0.0
    tell: Callable[[str], None] | None = None


_WAIT = _WaitPolicy()


def wait_for_writers(seconds: float, tell: Callable[[str], None] | None = None) -> None:
    """From now on, a writer finding the lock held waits up to ``seconds`` for it (0: refuses at
    once, the default); ``tell`` hears once that it waits. Set by the command line's --wait."""
    _WAIT.seconds = max(0.0, seconds)
    _WAIT.tell = tell


class Repository:
    """An opened backup location. Thread-safe for concurrent ``put_chunk``/``get_chunk``.

    Everything here is the format (docs/FORMAT.md); every byte goes through :attr:`backend`.
    An encrypted location is unlocked when opened (:attr:`keys`); from then on sealing, keyed
    chunk names and hidden image names are invisible to callers.
    """

    def __init__(
        self,
        backend: Backend,
        info: RepositoryInfo,
        keys: Keys | None = None,
        header: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.location = backend.location
        self.info = info
        self.keys = keys
        self._header = header or {}
        self._zero_digests: dict[int, bytes] = {}

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | Backend,
        create: bool = False,
        encrypt: bool = False,
    ) -> Repository:
        """Open the repository at ``location`` (an address, or a backend already made);
        with ``create``, initialise a missing or empty location (encrypted with ``encrypt``).
        An encrypted location asks :mod:`recovery.repository.secrets` for its passphrase."""
        backend = location if isinstance(location, Backend) else open_backend(location)
        where = backend.location
        try:
            try:
                blob = backend.read(REPO_HEADER, 0, 1 << 16)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                if create:
                    return cls._initialise(backend, encrypt)
                if backend.exists():
                    raise NotARepository(
                        f"{where} is not a backup location (no recovery-repo file in it)"
                    ) from None
                raise NotARepository(
                    f"{where} does not exist: give the folder of a backup"
                ) from None
            header = _parse_header(blob, f"{where}/{REPO_HEADER}", where)
            info = _header_info(header, where)
            if encrypt and not info.encrypted:
                raise UsageError(
                    f"{where} is a backup location without encryption, and encryption is chosen "
                    "when a location is created: choose a new, empty folder for encrypted backups"
                )
            keys = None
            if info.encrypted:
                passphrase = secrets.current().passphrase(where, new=False)
                if not passphrase:
                    raise PassphraseNeeded(
                        f"{where} is encrypted: give its passphrase (set RECOVERY_PASSPHRASE, or "
                        "run on a terminal to be asked)"
                    )
                keys = unlock_keys(header.get("encryption"), passphrase, where)
            return cls(backend, info, keys, header)
        except OSError as e:
            raise RepositoryError(f"cannot open backup location {where}: {e.strerror or e}") from e

    @classmethod
    def _initialise(cls, backend: Backend, encrypt: bool) -> Repository:
        where = backend.location
        try:
            backend.exists()
        except NotADirectoryError:
            raise NotARepository(
                f"{where} is a file, not a folder: give a folder for backups"
            ) from None
        if not backend.is_empty():
            raise NotARepository(
                f"{where} is not empty and not a backup location: give an empty or new folder"
            )
        import uuid  # here: only a new location needs it, and start-up counts

        keys = None
        header: dict[str, Any] = {
            "format": REPO_MAGIC,
            "version": PLAIN_VERSION,
            "id": str(uuid.uuid4()),
            "created": utc_now(),
        }
        if encrypt:
            passphrase = secrets.current().passphrase(where, new=True)
            if not passphrase:
                raise PassphraseNeeded(
                    f"a new encrypted location needs a passphrase: set RECOVERY_PASSPHRASE, or "
                    f"run on a terminal to be asked; nothing was created at {where}"
                )
            header["version"] = ENCRYPTED_VERSION
            header["encryption"], keys = new_encryption(passphrase)
        backend.create()
        info = _header_info(header, where)
        repo = cls(backend, info, keys, header)
        # Under the writers' lock (FORMAT.md, "Locking"): two processes creating one location
        # at the same moment both found it empty; the second must not replace the header the
        # first wrote (an encrypted one holds the only copy of the key its chunks are sealed
        # with). The second opens what the first created instead.
        with repo._creation_lock():
            try:
                created_meanwhile = backend.size(REPO_HEADER) is not None
                if not created_meanwhile:
                    repo._write(REPO_HEADER, json.dumps(header, indent=1).encode(), durable=True)
            except OSError as e:
                raise repo._write_error(e) from e
        if created_meanwhile:
            return cls.open(backend, encrypt=encrypt)
        return repo

    @contextlib.contextmanager
    def _creation_lock(self) -> Iterator[None]:
        """The writers' lock, waited for a few seconds: another creator holds it only as long
        as it takes to write a header (a writer at work for longer is refused as usual)."""
        note = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "operation": "create"})
        deadline = time.monotonic() + CREATION_WAIT
        with contextlib.ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(self.backend.lock(note))
                    break
                except LockHeld as held:
                    if time.monotonic() > deadline:
                        raise RepositoryLocked(
                            f"another recovery is writing to {self.location} "
                            f"({held.holder or 'unknown'}): wait for it to finish"
                        ) from None
                except OSError as e:
                    raise self._write_error(e) from e
                time.sleep(0.1)
            yield

    def change_passphrase(self, new_passphrase: str) -> None:
        """Wrap the master key under ``new_passphrase``: only the header is rewritten."""
        if self.keys is None:
            raise UsageError(f"{self.location} is not encrypted: it has no passphrase to change")
        if not new_passphrase:
            raise UsageError("the new passphrase is empty: give one")
        header = dict(self._header, encryption=wrap_keys(self.keys, new_passphrase))
        self._write(REPO_HEADER, json.dumps(header, indent=1).encode(), durable=True)
        self._header = header

    def local_path(self) -> str | None:
        """The folder on this machine holding the location, if any (see Backend.local_path)."""
        return self.backend.local_path()

    # -- hashing -------------------------------------------------------------------------

    def hash(self, data: bytes | bytearray | memoryview) -> bytes:
        """The name of a chunk holding ``data``: BLAKE3, keyed in an encrypted location."""
        return self.keys.hash(data) if self.keys is not None else hash_bytes(data)

    def zero_digest(self, size: int) -> bytes:
        """:meth:`hash` of ``size`` zero bytes (so a zero cell is found by its hash alone)."""
        d = self._zero_digests.get(size)
        if d is None:
            d = self._zero_digests[size] = self.hash(bytes(size))
        return d

    # -- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, operation: str) -> Iterator[None]:
        """Hold the writers' lock. When another process holds it: refuse at once, or, after
        :func:`wait_for_writers`, wait for it (telling the person once) up to its limit."""
        if self.keys is not None:
            operation = operation.split()[0]  # an image name says too much (FORMAT.md)
        note = json.dumps(
            {
                "pid": os.getpid(),
                "host": os.uname().nodename,
                "operation": operation,
                "since": utc_now(),
            }
        )
        deadline = time.monotonic() + _WAIT.seconds
        told = False
        with contextlib.ExitStack() as stack:
            # Only taking the lock is translated here: errors of the work done under it pass.
            while True:
                try:
                    stack.enter_context(self.backend.lock(note))
                    self._clear_tmp()
                    break
                except LockHeld as held:
                    holder = held.holder or "unknown"
                    if time.monotonic() >= deadline:
                        raise RepositoryLocked(
                            f"another recovery is writing to {self.location} "
                            f"({holder}): wait for it to finish"
                        ) from None
                    if not told and _WAIT.tell is not None:
                        _WAIT.tell(
                            f"another recovery is writing to {self.location} ({holder}): "
                            f"waiting for it (at most {_WAIT.seconds:.0f} s)"
                        )
                        told = True
                    time.sleep(min(LOCK_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                except OSError as e:
                    raise self._write_error(e) from e
            yield

    def _clear_tmp(self) -> None:
        for f in list(self.backend.list(TMP_FOLDER)):
            if f.name.endswith(".removing"):
                continue  # finished by remove's sweep
            with contextlib.suppress(OSError):
                self.backend.delete(f.name)

    # -- chunks --------------------------------------------------------------------------

    def has_chunk(self, digest: bytes) -> bool:
        return self.backend.size(chunk_name(digest)) is not None

    def chunk_size(self, digest: bytes) -> int | None:
        """Stored (compressed) bytes of a chunk file, or None when it is missing."""
        try:
            return self.backend.size(chunk_name(digest))
        except OSError:
            return None

    def put_chunk(self, digest: bytes, raw: bytes | bytearray | memoryview, level: int) -> int:
        """Store ``raw`` under ``digest`` unless present; the bytes written (0 if present)."""
        name = chunk_name(digest)
        try:
            if self.backend.size(name) is not None:
                return 0
            blob: bytes | bytearray = encode_chunk(raw, level)
            if self.keys is not None:
                blob = self.keys.seal(blob, digest)
            self.backend.write(name, blob)
        except OSError as e:
            raise self._write_error(e) from e
        return len(blob)

    def read_chunk_file(self, digest: bytes, where: str = "") -> bytes:
        """A chunk file's stored bytes (at most one byte more than any chunk file can hold)."""
        name = chunk_name(digest)
        try:
            return self.backend.read(name, 0, MAX_STORED_CHUNK + 1)
        except FileNotFoundError:
            raise self._missing(digest, where) from None
        except OSError as e:
            raise RepositoryError(f"cannot read {self.location}/{name}: {e.strerror}") from e

    def _missing(self, digest: bytes, where: str) -> IntegrityError:
        prefix = f"{where}: " if where else ""
        return IntegrityError(
            f"{prefix}chunk {digest.hex()} is missing ({self.location}/{chunk_name(digest)})"
        )

    def _read_chunk_scratch(self, digest: bytes, where: str) -> memoryview | bytes:
        """A chunk file's stored bytes in this thread's reused buffer (:func:`_scratch`): valid
        until this thread reads its next chunk file, so never handed beyond this class. From a
        location not on this machine, fresh bytes (read_chunk_file): a transfer costs more
        than memory does, and a file larger than the buffer would be transferred twice."""
        if self.backend.local_path() is None:
            return self.read_chunk_file(digest, where)
        name = chunk_name(digest)
        try:
            buf = _scratch("stored", 0)
            size = self.backend.read_into(name, buf)
            if size > len(buf):
                if size > MAX_STORED_CHUNK:
                    # Larger than any chunk file: damaged, as read_chunk_file reports it.
                    return self.read_chunk_file(digest, where)
                buf = _scratch("stored", size)
                size = self.backend.read_into(name, buf)
                if size > len(buf):  # it grew meanwhile
                    return self.read_chunk_file(digest, where)
        except FileNotFoundError:
            raise self._missing(digest, where) from None
        except OSError as e:
            raise RepositoryError(f"cannot read {self.location}/{name}: {e.strerror}") from e
        return memoryview(buf)[:size]

    def _open_scratch(
        self, blob: bytes | bytearray | memoryview, digest: bytes, where: str
    ) -> memoryview:
        """A sealed chunk file authenticated and decrypted into this thread's reused buffer;
        the view is valid until this thread opens its next chunk."""
        assert self.keys is not None
        what = f"{where or self.location}: chunk {digest.hex()}"
        buf = _scratch("plain", self.keys.plaintext_size(blob, what))
        return self.keys.open_into(blob, digest, what, buf)

    def get_chunk(self, digest: bytes, where: str = "", stored: bytes | None = None) -> bytes:
        """The raw bytes of a chunk, with every check of the format (docs/FORMAT.md).

        ``stored``: the chunk file as :meth:`authenticate_chunk_file` kept it, so it is not
        read again (it is opened and checked again all the same)."""
        blob = stored if stored is not None else self._read_chunk_scratch(digest, where)
        # The file and its plaintext sit in this thread's reused buffers: decode_chunk returns
        # fresh bytes (decompressed or copied), so no view of them outlives this call.
        if self.keys is not None:
            blob = self._open_scratch(blob, digest, where)
        return decode_chunk(blob, digest, where or self.location, self.hash)

    @property
    def authenticates_chunk_files(self) -> bool:
        """Whether :meth:`authenticate_chunk_file` proves a chunk intact without decompressing
        it (a sealed chunk's AES-GCM tag); otherwise only :meth:`get_chunk` does."""
        return self.keys is not None

    def authenticate_chunk_file(self, digest: bytes, where: str = "") -> bytes | None:
        """Read a sealed chunk file and authenticate it (its AES-GCM tag, which binds it to
        ``digest``): damage raises IntegrityError here. Encrypted locations only.

        Returns the stored bytes when keeping them for :meth:`get_chunk` is worth memory: on a
        location that is not on this machine, where reading them again costs a transfer; on
        a local folder, reading again from the page cache costs less than keeping (None)."""
        assert self.keys is not None
        if self.backend.local_path() is None:
            blob = self.read_chunk_file(digest, where)
            self._open_scratch(blob, digest, where)
            return blob
        self._open_scratch(self._read_chunk_scratch(digest, where), digest, where)
        return None

    def check_chunk_header(self, digest: bytes, where: str) -> None:
        """Cheap pre-flight check: the file exists and its header fits its size."""
        name = chunk_name(digest)
        try:
            found = self.backend.head(name, CHUNK_HEADER.size)
        except FileNotFoundError:
            found = None
        except OSError as e:
            raise RepositoryError(f"cannot read {self.location}/{name}: {e.strerror}") from e
        if found is None:
            raise IntegrityError(f"{where}: chunk {digest.hex()} is missing")
        size, head = found
        if self.keys is not None:
            # Sealed: only the envelope can be checked without decrypting the whole chunk.
            if size < SEAL_OVERHEAD + CHUNK_HEADER.size or head[:4] != b"RSE1":
                raise IntegrityError(f"{where}: chunk {digest.hex()} is damaged or truncated")
            return
        if len(head) < CHUNK_HEADER.size:
            raise IntegrityError(f"{where}: chunk {digest.hex()} is truncated")
        h = ChunkHeader(*CHUNK_HEADER.unpack(head))
        if h.magic != CHUNK_MAGIC or h.version != 1 or h.stored_length != size - CHUNK_HEADER.size:
            raise IntegrityError(f"{where}: chunk {digest.hex()} is damaged or truncated")

    def iter_chunks(self) -> Iterator[tuple[bytes, int]]:
        """Every chunk file of the location: its hash and stored size."""
        for f in self.backend.list(CHUNKS_FOLDER):
            leaf = f.name.rpartition("/")[2]
            try:
                digest = bytes.fromhex(leaf)
            except ValueError:
                continue
            if len(digest) == HASH_SIZE and f.name == chunk_name(digest):
                yield digest, f.size

    def delete_chunk(self, digest: bytes) -> None:
        name = chunk_name(digest)
        try:
            self.backend.delete(name)
        except OSError as e:
            raise RepositoryError(f"cannot delete {self.location}/{name}: {e.strerror}") from e

    def flush(self) -> None:
        """Make every chunk written so far durable (before a manifest may name them)."""
        try:
            self.backend.flush()
        except OSError as e:
            raise self._write_error(e) from e

    # -- manifests -----------------------------------------------------------------------

    def _image_file(self, name: str) -> str:
        """The file id of image ``name``: the name itself, or in an encrypted location a keyed
        hash of it (FORMAT.md, "Manifest names"); ``unreadable-ID`` names a damaged one."""
        if self.keys is None:
            return name
        if name.startswith(UNREADABLE) and _HEX32.fullmatch(name[len(UNREADABLE) :]):
            return name[len(UNREADABLE) :]
        return self.keys.hash(b"image:" + name.encode()).hex()[:32]

    def _manifest_file(self, name: str) -> str:
        return manifest_name(self._image_file(name))

    def manifest_where(self, name: str) -> str:
        """How messages name an image's manifest."""
        if self.keys is not None:
            return f"{self.location}: image {name}"
        return f"{self.location}/{manifest_name(name)}"

    def image_names(self) -> list[str]:
        suffix = ".image"
        ids = [
            f.name[len("images/") : -len(suffix)]
            for f in self.backend.list(IMAGES_FOLDER)
            if f.name.endswith(suffix) and f.name.count("/") == 1
        ]
        if self.keys is None:
            return sorted(ids)
        names = []
        for file_id in ids:
            try:
                name = self._read_manifest_file(file_id, "").get("name")
            except RecoveryError:
                name = None
            ok = isinstance(name, str) and self._image_file(name) == file_id
            names.append(name if ok and isinstance(name, str) else UNREADABLE + file_id)
        return sorted(names)

    def has_image(self, name: str) -> bool:
        try:
            return self.backend.size(self._manifest_file(name)) is not None
        except OSError as e:
            raise RepositoryError(f"cannot read {self.location}: {e.strerror}") from e

    def write_manifest(
        self, name: str, body: dict[str, Any], version: int = MANIFEST_VERSION
    ) -> None:
        check_name(name)
        data = json.dumps(body, separators=(",", ":")).encode()
        if len(data) > MAX_MANIFEST:
            raise RepositoryError(f"image {name}: manifest too large ({len(data)} bytes)")
        head = MANIFEST_HEADER.pack(MANIFEST_MAGIC, version, 0, len(data))
        blob: bytes | bytearray = head + data
        blob += hash_bytes(blob)
        if self.keys is not None:
            blob = self.keys.seal(blob, b"manifest")
        self._write(self._manifest_file(name), blob, durable=True)

    def read_manifest(self, name: str) -> dict[str, Any]:
        try:
            return self._read_manifest_file(self._image_file(name), name)
        except FileNotFoundError:
            names = self.image_names()
            hint = f" (images here: {', '.join(names)})" if names else " (it holds no images)"
            raise ImageNotFound(f"no image '{name}' in {self.location}{hint}") from None

    def _read_manifest_file(self, file_id: str, name: str) -> dict[str, Any]:
        where = self.manifest_where(name or file_id)
        try:
            blob = self.backend.read(manifest_name(file_id), 0, MAX_MANIFEST + 1024)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise RepositoryError(f"cannot read {where}: {e.strerror}") from e
        if self.keys is not None:
            blob = self.keys.open(blob, b"manifest", f"{where}: its manifest")
        body = parse_manifest(blob, where)
        if self.keys is not None and name and body.get("name") != name:
            raise IntegrityError(f"{where}: the manifest names another image")
        return body

    def mark_verified(self, name: str) -> str:
        when = utc_now()
        blob: bytes | bytearray = json.dumps({"verified": when}).encode()
        if self.keys is not None:
            blob = self.keys.seal(blob, b"verified")
        self._write(verified_name(self._image_file(name)), blob, durable=True)
        return when

    def verified_at(self, name: str) -> str | None:
        try:
            blob = self.backend.read(verified_name(self._image_file(name)), 0, 4096)
            if self.keys is not None:
                blob = self.keys.open(blob, b"verified", "verified note")
            data = json.loads(blob)
            v = data.get("verified") if isinstance(data, dict) else None
            return v if isinstance(v, str) else None
        except (OSError, ValueError, RecursionError, RecoveryError):
            return None

    # -- removal (docs/FORMAT.md, "Removing an image"); the caller holds the lock ----------

    def retire_manifest(self, name: str) -> bool:
        """Step 2 of a removal: the manifest goes (to ``tmp/NAME.image.removing``); from here
        on the image is gone. False when it was already retired by an interrupted removal."""
        file_id = self._image_file(name)
        manifest, removing = manifest_name(file_id), removing_name(file_id)
        try:
            if self.backend.size(manifest) is None:
                if self.backend.size(removing) is not None:
                    return False
                self.read_manifest(name)  # raises ImageNotFound with the list of images
            if self.backend.supports_move:
                self.backend.move(manifest, removing)
            else:
                self.backend.write(removing, self.backend.read(manifest), durable=True)
                self.backend.delete(manifest)
            self.backend.delete(verified_name(file_id))
        except OSError as e:
            raise RepositoryError(f"cannot remove {self.manifest_where(name)}: {e.strerror}") from e
        return True

    def clear_removal_markers(self) -> None:
        for f in list(self.backend.list(TMP_FOLDER)):
            if f.name.endswith(".removing"):
                with contextlib.suppress(OSError):
                    self.backend.delete(f.name)

    # -- files ---------------------------------------------------------------------------

    def _write(self, name: str, data: bytes | bytearray, durable: bool) -> None:
        try:
            self.backend.write(name, data, durable=durable)
        except OSError as e:
            raise self._write_error(e) from e

    def _write_error(self, e: OSError) -> RepositoryError:
        if e.errno == errno.ENOSPC:
            return RepositoryError(
                f"the backup location {self.location} is full: free space there or choose "
                "another location (what was saved so far is kept; a rerun continues)"
            )
        if e.errno in (errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE):
            if self.backend.local_path() is None:
                return RepositoryError(
                    f"the backup location {self.location} stopped answering ({e.strerror}): "
                    "check the network and the server, then run again (what was saved so far "
                    "is kept; a rerun continues)"
                )
            return RepositoryError(
                f"the backup location {self.location} stopped answering ({e.strerror}): was the "
                "disk removed? Reconnect it and run again"
            )
        return RepositoryError(f"cannot write to {self.location}: {e.strerror}")


def is_repository(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` holds a repository header of ours (of any version)."""
    try:
        backend = open_backend(location)
        blob = backend.read(REPO_HEADER, 0, 1 << 16)
        _parse_header(blob, REPO_HEADER, backend.location)
    except UnsupportedVersion:
        return True
    except (OSError, RecoveryError):
        return False
    return True


def _parse_header(blob: bytes, header: str, where: str) -> dict[str, Any]:
    """The header's JSON object, checked for magic and version (FORMAT.md, `recovery-repo`)."""
    try:
        data = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise NotARepository(f"{header} is damaged ({e}): not a backup location") from e
    if not isinstance(data, dict) or data.get("format") != REPO_MAGIC:
        raise NotARepository(f"{where} is not a backup location ({header} is not ours)")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise NotARepository(f"{header} has no valid version")
    if version > REPO_VERSION:
        raise UnsupportedVersion(
            f"{where} was written by a newer recovery (format version {version}, this one "
            f"reads {REPO_VERSION}): use a newer recovery"
        )
    if version == ENCRYPTED_VERSION:
        check_encryption(data.get("encryption"), where)
    return data


def _header_info(data: dict[str, Any], where: str) -> RepositoryInfo:
    return RepositoryInfo(
        where,
        str(data.get("id", "")),
        str(data.get("created", "")),
        int(data["version"]),
        data["version"] == ENCRYPTED_VERSION,
    )


def parse_manifest(blob: bytes, where: str) -> dict[str, Any]:
    """Check and decode a manifest file (FORMAT.md, "Manifests")."""
    if len(blob) < MANIFEST_HEADER.size + HASH_SIZE:
        raise IntegrityError(f"{where}: manifest is truncated")
    magic, version, _reserved, length = MANIFEST_HEADER.unpack_from(blob)
    if magic != MANIFEST_MAGIC:
        raise IntegrityError(f"{where}: not an image manifest (bad magic)")
    if version > NEWEST_MANIFEST_VERSION:
        raise UnsupportedVersion(
            f"{where}: image written by a newer recovery (manifest version {version}, this one "
            f"reads {NEWEST_MANIFEST_VERSION}): use a newer recovery"
        )
    if version not in (MANIFEST_VERSION, NEWEST_MANIFEST_VERSION):
        raise IntegrityError(f"{where}: manifest version {version} is invalid")
    end = MANIFEST_HEADER.size + length
    if length > MAX_MANIFEST or end + HASH_SIZE != len(blob):
        raise IntegrityError(f"{where}: manifest is truncated or has trailing bytes")
    expected = blob[end:]
    got = hash_bytes(blob[:end])
    if got != expected:
        raise IntegrityError(
            f"{where}: manifest is damaged (hash expected {expected.hex()}, got {got.hex()})"
        )
    try:
        body = json.loads(blob[MANIFEST_HEADER.size : end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise IntegrityError(f"{where}: manifest body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise IntegrityError(f"{where}: manifest body is not an object")
    if (version == NEWEST_MANIFEST_VERSION) != (body.get("kind") == "files"):
        raise IntegrityError(f"{where}: manifest version {version} does not match its kind")
    return body
